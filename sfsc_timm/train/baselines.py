"""The SFSC paper's comparison methods besides ``bct_s`` (docs/design.md), as train steps.

``independent``, ``bct`` and ``asymmetric`` train one static model per width (:class:`~sfsc_timm.models.ModelSet`,
no shared parameters). ``bct`` and ``asymmetric`` have two stages of ``epochs`` each: the full-width model first, then
the narrower models against the frozen full one. Within a stage the models share no parameters and the teacher is
frozen, so training them in one pass with summed losses is the same as training them one after another.
``asymmetric_s`` is the supernet counterpart of ``asymmetric``.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

from ..losses import embedding_regression
from .registry import register_method
from .steps import SummedLossStep


@register_method('independent')
class IndependentStep(SummedLossStep):
    """The seed's "Unified Model": one model per width, own classifier, cross-entropy only, no compatibility term."""
    network = 'model_set'

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        return [self.classification_loss(w, images, labels) for w in self.widths]


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
            return [self.classification_loss(w, images, labels) if w == 1.0 else None for w in self.widths]
        return [None if w == 1.0 else self.student_loss(w, images, labels) for w in self.widths]


@register_method('bct')
class BCTStep(_StagedStep):
    """BCT (Shen et al. 2020): each narrower model's own cross-entropy plus the influence loss, cross-entropy of its
    embedding through the frozen full-width classifier."""

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding, logits = self.forward_width(width, images)
        old_head = self.net.member(1.0).head
        influence = self.ce_loss(F.linear(embedding.float(), old_head.weight.detach(), old_head.bias.detach()), labels)
        loss = self.ce_loss(logits.float(), labels) + influence
        extra = self.metric_loss(embedding, labels)
        return loss if extra is None else loss + extra


@register_method('asymmetric')
class AsymmetricStep(_StagedStep):
    """Asymmetric metric learning (Budnik & Avrithis 2021): each narrower model regresses the frozen full model's
    embedding of the same image, so its queries can search the full model's gallery."""

    def student_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding, _ = self.forward_width(width, images)
        return embedding_regression(embedding, self.teacher_embedding(images))


@register_method('asymmetric_s')
class AsymmetricSharedStep(SummedLossStep):
    """The supernet: the full width learns with cross-entropy through the shared classifier; every narrower width
    regresses the full width's detached embedding of the same batch; the losses are summed."""

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        full_embedding, full_logits = self.forward_width(1.0, images)
        losses = []
        for width in self.widths:
            if width == 1.0:
                loss = self.ce_loss(full_logits.float(), labels)
                extra = self.metric_loss(full_embedding, labels)
                losses.append(loss if extra is None else loss + extra)
            else:
                embedding, _ = self.forward_width(width, images)
                losses.append(embedding_regression(embedding, full_embedding.detach()))
        return losses
