"""The SFSC paper's comparison methods, as train steps: one class per algorithm (docs/design.md).

* :class:`IndependentStep`: one static model per width (:class:`~sfsc_timm.models.ModelSet`, no shared parameters),
  each its own cross-entropy (``independent``).
* :class:`StagedStep`: one model per width in two stages of ``epochs`` each, the full-width model first, then the
  narrower models against the frozen full one (``bct``: BCT's influence loss; ``asymmetric``: asymmetric metric
  learning). Within a stage the models share no parameters and the teacher is frozen, so training them in one pass
  with summed losses is the same as training them one after another.
* :class:`SupernetSumStep`: the supernet, its widths' losses summed, one backward, the plain optimizer (``bct_s``:
  cross-entropy at every width through the shared classifier; ``asymmetric_s``: the narrower widths' asymmetric loss
  against the widest width's detached embeddings).

Asymmetric metric learning is as Budnik & Avrithis define it (labels, the student's anchors against the teacher's
positives and negatives); the ``regression`` transfer loss is the plain embedding regression onto the teacher (no
labels), which the same paper reports as a strong baseline.
"""
from typing import Callable, Dict, List, Optional

import torch

from ..losses import ASYMMETRIC_MARGIN, asymmetric_contrastive_loss, embedding_regression
from .options import IndependentOptions, StagedOptions, SupernetSumOptions
from .steps import SummedLossStep, _plus

__all__ = ['IndependentStep', 'StagedStep', 'SupernetSumStep', 'asymmetric_loss', 'regression_loss']


def asymmetric_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Asymmetric metric learning (Budnik & Avrithis, CVPR 2021, arXiv 2006.16331), its contrastive loss: each
    student embedding is an anchor, the teacher's embeddings of the batch are its positives (same label, its own
    image included) and negatives (other labels), margin ``ASYMMETRIC_MARGIN`` on L2-normalised embeddings
    (:func:`~sfsc_timm.losses.asymmetric_contrastive_loss`). The teacher's embeddings are detached here.
    """
    return asymmetric_contrastive_loss(student, teacher.detach(), labels, margin=ASYMMETRIC_MARGIN)


def regression_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Embedding regression: mean ``1 - cos`` between the student's and the detached teacher's embedding of the same
    image; the labels are not used."""
    return embedding_regression(student, teacher.detach())


# a narrower width's (student's) loss against the teacher's embeddings of the same batch, by option value
TRANSFER_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = dict(
    asymmetric=asymmetric_loss, regression=regression_loss)


class IndependentStep(SummedLossStep):
    """The SFSC paper's "Unified Model": one model per width, own classifier, cross-entropy only, no compatibility
    term."""
    network = 'model_set'
    options_class = IndependentOptions

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        return [self.width_classification_loss(w, images, labels) for w in self.widths]


class StagedStep(SummedLossStep):
    """Stage 0: the full-width model alone (cross-entropy). Stage 1: the narrower models against the frozen full one,
    with ``transfer_loss``: BCT's influence loss (Shen et al. 2020: each model's own cross-entropy plus that of its
    embedding through the frozen full-width classifier, both label-smoothed alike, both linear or both cosine), or
    the asymmetric / regression loss against the frozen full model's embeddings (the gallery side: the narrower
    models' queries learn to search it)."""
    network = 'model_set'
    num_stages = 2
    options_class = StagedOptions

    def stage(self, epoch: float) -> int:
        return min(int(epoch // self.cfg.epochs), self.num_stages - 1)

    def teacher_embedding(self, images: torch.Tensor) -> torch.Tensor:
        teacher = self.net.member(1.0).eval()  # frozen: no gradient, BatchNorm statistics untouched
        with torch.no_grad(), self.autocast():
            return teacher.forward_head(teacher.forward_features(images), pre_logits=True)

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.forward_width(width, images)
        if self.options.transfer_loss == 'influence':
            influence = self.ce_loss(
                self.classifier_logits(out.embedding.float(), self.net.member(1.0).head, frozen=True), labels)
            return self.classification_loss(out, labels) + influence
        return TRANSFER_LOSSES[self.options.transfer_loss](out.embedding, self.teacher_embedding(images), labels)

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        if self.stage(epoch) == 0:
            return [self.width_classification_loss(w, images, labels) if w == 1.0 else None for w in self.widths]
        return [None if w == 1.0 else self.student_loss(w, images, labels) for w in self.widths]


class SupernetSumStep(SummedLossStep):
    """The supernet: the widest width learns with cross-entropy (+ triplet) through the shared classifier, every
    narrower width with ``student_loss`` (cross-entropy through the same classifier, or the asymmetric / regression loss
    against the widest width's detached embeddings of the same batch), plus the cross-width triplet when asked; the
    losses are summed (no uncertainty, no projection)."""
    options_class = SupernetSumOptions

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        outs = [self.forward_width(w, images) for w in self.widths]  # widest first
        student_loss = self.options.student_loss
        losses = []
        for i, (out, cross) in enumerate(zip(outs, self.cross_width_triplets(outs, labels))):
            if i == 0 or student_loss == 'cross_entropy':
                own = self.classification_loss(out, labels)
            else:
                own = TRANSFER_LOSSES[student_loss](out.embedding, outs[0].embedding, labels)
            losses.append(_plus(own, cross))
        return losses
