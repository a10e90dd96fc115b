"""The SFSC paper's comparison methods besides ``bct_s`` (docs/design.md), as train steps.

``independent``, ``bct`` and ``asymmetric`` train one static model per width (:class:`~sfsc_timm.models.ModelSet`,
no shared parameters). ``bct`` and ``asymmetric`` have two stages of ``epochs`` each: the full-width model first, then
the narrower models against the frozen full one. Within a stage the models share no parameters and the teacher is
frozen, so training them in one pass with summed losses is the same as training them one after another.
``asymmetric_s`` is the supernet counterpart of ``asymmetric``.

``asymmetric`` and ``asymmetric_s`` are asymmetric metric learning as Budnik & Avrithis define it (labels, the
student's anchors against the teacher's positives and negatives); ``asymmetric_reg`` and ``asymmetric_s_reg`` keep
the plain embedding regression onto the teacher (no labels), which the same paper reports as a strong baseline.
"""
from typing import List, Optional

import torch

from ..losses import ASYMMETRIC_MARGIN, asymmetric_contrastive_loss, embedding_regression
from .registry import register_method
from .steps import SummedLossStep


@register_method('independent')
class IndependentStep(SummedLossStep):
    """The SFSC paper's "Unified Model": one model per width, own classifier, cross-entropy only, no compatibility
    term."""
    network = 'model_set'

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        return [self.width_classification_loss(w, images, labels) for w in self.widths]


class _StagedStep(SummedLossStep):
    """Stage 0: the full-width model alone (cross-entropy). Stage 1: the narrower models against the frozen full one."""
    network = 'model_set'
    num_stages = 2

    def stage(self, epoch: float) -> int:
        return min(int(epoch // self.cfg.epochs), self.num_stages - 1)

    def teacher_embedding(self, images: torch.Tensor) -> torch.Tensor:
        teacher = self.net.member(1.0).eval()  # frozen: no gradient, BatchNorm statistics untouched
        with torch.no_grad(), self.autocast():
            return teacher.forward_head(teacher.forward_features(images), pre_logits=True)

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        if self.stage(epoch) == 0:
            return [self.width_classification_loss(w, images, labels) if w == 1.0 else None for w in self.widths]
        return [None if w == 1.0 else self.student_loss(w, images, labels) for w in self.widths]


@register_method('bct')
class BCTStep(_StagedStep):
    """BCT (Shen et al. 2020): each narrower model's own cross-entropy plus the influence loss, cross-entropy of its
    embedding through the frozen full-width classifier (both label-smoothed alike; both linear, or both cosine)."""

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.forward_width(width, images)
        influence = self.ce_loss(self.classifier_logits(out.embedding.float(), self.net.member(1.0).head, frozen=True),
                                 labels)
        return self.classification_loss(out, labels) + influence


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


@register_method('asymmetric')
class AsymmetricStep(_StagedStep):
    """Asymmetric metric learning (Budnik & Avrithis 2021): the full model is trained first and frozen (the gallery
    side); then each narrower model (the query side) learns with :func:`asymmetric_loss` against the frozen full
    model's embeddings of the batch, so its queries search the full model's gallery."""

    transfer_loss = staticmethod(asymmetric_loss)

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.forward_width(width, images)
        return self.transfer_loss(out.embedding, self.teacher_embedding(images), labels)


@register_method('asymmetric_reg')
class AsymmetricRegressionStep(AsymmetricStep):
    """``asymmetric`` with embedding regression instead (:func:`regression_loss`, no labels): each narrower model
    regresses the frozen full model's embedding of the same image."""

    transfer_loss = staticmethod(regression_loss)


@register_method('asymmetric_s')
class AsymmetricSharedStep(SummedLossStep):
    """The supernet: the full width learns with cross-entropy (+ triplet) through the shared classifier; every
    narrower width learns with :func:`asymmetric_loss` against the full width's detached embeddings of the same
    batch; the losses are summed."""

    transfer_loss = staticmethod(asymmetric_loss)

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        full = self.forward_width(1.0, images)
        losses = []
        for width in self.widths:
            if width == 1.0:
                losses.append(self.classification_loss(full, labels))
            else:
                student = self.forward_width(width, images)
                losses.append(self.transfer_loss(student.embedding, full.embedding, labels))
        return losses


@register_method('asymmetric_s_reg')
class AsymmetricSharedRegressionStep(AsymmetricSharedStep):
    """``asymmetric_s`` with embedding regression (:func:`regression_loss`): every narrower width regresses the full
    width's detached embedding of the same image."""

    transfer_loss = staticmethod(regression_loss)
