""" The training steps: one class per algorithm; the trainer's loop only ever calls ``step(images, labels, epoch)``.

A step class is an algorithm; its ``options_class`` types the settings that differ between the methods built on it
(:mod:`.options`), and :mod:`.methods` registers each method as the class with its own option values. The step builds
its own optimizer (the scheduler drives ``step.optimizer``) and returns a :class:`StepResult`. This module holds the
base class, the SFSC step (the supernet with projected per-width gradients) and the base of the summed-loss steps;
:mod:`.baselines` the SFSC paper's comparison methods.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.optim import create_optimizer_v2

from ..losses import (
    BatchHardTripletLoss, LabelSmoothingCrossEntropy, UncertaintyCompatibleLoss, cosine_logits,
    cross_batch_hard_triplet, dirichlet_uncertainty, embedding_regression, evidence_to_alpha, posterior_distillation,
    width_priorities,
)
from ..models import ModelKind, model_kind
from ..optim import GradientProjection, count_layer_conflicts
from .distributed import DistInfo, all_reduce_grads, all_reduce_mean_, any_rank
from .params import shared_params, width_gradient_supports
from .options import IndependentOptions, SFSCOptions

__all__ = ['StepResult', 'WidthOutput', 'TrainStep', 'SFSCStep', 'SummedLossStep']


@dataclass
class StepResult:
    """What one step did.

    Attributes:
        loss: The objective that was minimised (priority-weighted sum over widths); NaN / inf when skipped.
        width_losses: Each width's loss before its priority, widest first.
        priorities: Each width's priority (ones when the method has none), widest first.
        num_conflicts: Gradient pairs projected this step (0 without projection).
        layer_pairs: ``(shared parameter, pair of widths)`` whose gradients were compared this step (0: none were,
            as without projection or in the flat layout), the diagnostic of the next two.
        layer_conflicts: How many of those pairs had a negative dot product: the widths pulled that layer apart,
            whether or not the projection acted on it.
        layer_conflicts_widest: How many of those involved the widest width.
        skipped: The loss was non-finite on some rank, so nothing was updated.
        uncertainties: Each width's mean Dirichlet uncertainty ``u = C / S`` (methods with the uncertainty loss).
    """
    loss: float
    width_losses: List[float] = field(default_factory=list)
    priorities: List[float] = field(default_factory=list)
    num_conflicts: int = 0
    layer_pairs: int = 0
    layer_conflicts: int = 0
    layer_conflicts_widest: int = 0
    skipped: bool = False
    uncertainties: List[float] = field(default_factory=list)


class WidthOutput(NamedTuple):
    """One width's forward pass over a batch.

    Attributes:
        embedding: ``(B, D)`` the neck's output: what retrieval ranks by, and what the classifier reads.
        logits: ``(B, C)`` the classifier's output.
        pre_bn: ``(B, D)`` the neck's Linear output before its BatchNorm (BNNeck, Luo et al. 2019, Sec. 3.5).
    """
    embedding: torch.Tensor
    logits: torch.Tensor
    pre_bn: torch.Tensor


class TrainStep:
    """Base class: the network, the per-width forward, the optional triplet term, AMP and the optimizer state.

    Args:
        net: A switchable supernet with a classifier (``num_classes > 0``).
        cfg: The resolved TrainConfig; ``cfg.options`` is an instance of the class's ``options_class``.
        dist_info: Rank / world size / device.
    """

    network = 'supernet'  # or 'model_set': one static model per width (sfsc_timm.models.ModelSet)
    num_stages = 1  # methods that train the full model first, then the others, have 2 (epochs are per stage)
    options_class: type = IndependentOptions  # the dataclass of the algorithm's options (train/options.py)

    def __init__(self, net: nn.Module, cfg, dist_info: DistInfo):
        if not getattr(net, 'num_classes', 0):
            raise ValueError('the network needs a classifier (num_classes > 0) to be trained.')
        self.net = net
        self.cfg = cfg
        if not isinstance(cfg.options, self.options_class):
            raise TypeError(f'{type(self).__name__} takes {self.options_class.__name__}, got '
                            f'{type(cfg.options).__name__}: build the config with config_from_dict.')
        self.options = cfg.options
        self.dist = dist_info
        # widest first (docs/design.md, "The SFSC step")
        self.widths: Tuple[float, ...] = tuple(sorted(net.widths, reverse=True))
        self.triplet = BatchHardTripletLoss(margin=cfg.triplet_margin) if cfg.lambda_tri > 0 else None
        self.ce_loss = _cross_entropy(cfg.label_smoothing)
        device_type = dist_info.device.type
        self.amp_dtype = getattr(torch, cfg.amp_dtype)
        self.amp = cfg.amp
        # loss scaling is only needed (and only supported) for float16 on an accelerator
        use_scaler = cfg.amp and self.amp_dtype == torch.float16 and device_type != 'cpu'
        self.scaler = torch.amp.GradScaler(device_type) if use_scaler else None
        self.optimizer = self.create_optimizer()

    def create_optimizer(self) -> torch.optim.Optimizer:
        """timm's optimizer over all parameters (no weight decay on biases / norms)."""
        return create_optimizer_v2(self.net, opt=self.cfg.opt, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                   momentum=self.cfg.momentum)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    def forward_width(self, width: float, images: torch.Tensor) -> WidthOutput:
        """Embedding, logits (through the classifier the network uses at `width`) and pre-BN feature at `width`."""
        # the model's own forward_head computes the embedding; the neck's Linear output is read on its way, so the
        # step computes exactly what inference does (docs/design.md, "Architecture": the neck is Linear, BatchNorm)
        captured: List[torch.Tensor] = []
        hook = self._neck_linear(width).register_forward_hook(lambda module, args, out: captured.append(out))
        try:
            with self.net.width(width), self.autocast():
                embedding = self.net.forward_head(self.net.forward_features(images), pre_logits=True)
                logits = self.classifier_logits(embedding)
        finally:
            hook.remove()
        return WidthOutput(embedding, logits, captured[-1])

    def classifier_logits(self, embedding: torch.Tensor, head: Optional[nn.Module] = None,
                          frozen: bool = False) -> torch.Tensor:
        """Logits of `head` (default: the classifier the network uses at the active width) as the recipe forms them:
        linear (``W e + b``) or cosine (``classifier_scale`` x the cosine to each weight row, ``classifier: cosine``).
        ``frozen``: no gradient reaches the head (BCT's influence loss through the old classifier)."""
        head = self.net.head if head is None else head
        if self.cfg.classifier == 'cosine':
            return cosine_logits(embedding, head.weight.detach() if frozen else head.weight, self.cfg.classifier_scale)
        if not frozen:
            return head(embedding)
        return F.linear(embedding, head.weight.detach(), None if head.bias is None else head.bias.detach())

    def _neck_linear(self, width: float) -> nn.Module:
        # a ModelSet's member of that width, or the supernet (whose switchable neck serves every width)
        model = self.net.member(width) if model_kind(self.net) is ModelKind.MODEL_SET else self.net
        return model.neck.fc

    def metric_loss(self, out: WidthOutput, labels: torch.Tensor) -> Optional[torch.Tensor]:
        """``lambda_tri * triplet`` on ``triplet_feature`` (the embedding or the pre-BN feature), or None without a
        triplet term."""
        if self.triplet is None:
            return None
        feature = out.pre_bn if self.cfg.triplet_feature == 'pre_bn' else out.embedding
        return self.cfg.lambda_tri * self.triplet(feature, labels)

    def cross_width_triplets(self, outs: List[WidthOutput], labels: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """Each width's ``lambda_cross_tri`` x cross-width triplet term (None: none), given every width's forward pass,
        widest first. ``cross_tri_direction: to_widest``: each narrower width's anchors against the widest width's
        detached embeddings, so the widest width is the fixed gallery the others learn to search; ``mutual``: every
        width against every other, both as the anchors and as the gallery.

        ``mutual`` gives each width the half of every pair's loss that trains it (its own side, the other detached),
        averaged over the other widths: the terms' gradients sum to that of the loss over all ordered pairs, and each
        width's stays inside its own sub-network, as the sfsc methods' projection needs (it compares the widths'
        gradients, reading each only on its own width's block).
        """
        terms: List[Optional[torch.Tensor]] = [None] * len(outs)
        weight, margin = self.options.lambda_cross_tri, self.cfg.triplet_margin
        if weight == 0 or len(outs) < 2:
            return terms
        if self.options.cross_tri_direction == 'to_widest':
            widest = outs[0].embedding.detach()
            terms[1:] = [weight * cross_batch_hard_triplet(out.embedding, widest, labels, margin) for out in outs[1:]]
            return terms
        for i, own in enumerate(outs):
            pairs = [cross_batch_hard_triplet(own.embedding, other.embedding.detach(), labels, margin)
                     + cross_batch_hard_triplet(other.embedding.detach(), own.embedding, labels, margin)
                     for j, other in enumerate(outs) if j != i]
            terms[i] = weight * torch.stack(pairs).mean()
        return terms

    def classification_loss(self, out: WidthOutput, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (label-smoothed with ``label_smoothing``) of `out`'s logits, plus the triplet term."""
        loss = self.ce_loss(out.logits.float(), labels)
        extra = self.metric_loss(out, labels)
        return loss if extra is None else loss + extra

    @torch.no_grad()
    def _snapshot_norm_stats(self) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        # a non-finite forward would leave NaN in BatchNorm running statistics; a skipped step must change nothing.
        # One multi-tensor copy: a supernet has a BatchNorm per width, hundreds of buffers, and a kernel launch each
        # would cost milliseconds per step on a GPU
        buffers = [b for name, b in self.net.named_buffers()
                   if name.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
        # grouped by dtype and device: a multi-tensor kernel takes one of each (the counters are int64)
        buffers.sort(key=lambda b: (str(b.device), str(b.dtype)))
        saved = [torch.empty_like(b) for b in buffers]
        _copy_grouped(saved, buffers)
        return buffers, saved

    @staticmethod
    @torch.no_grad()
    def _restore(snapshot: Tuple[List[torch.Tensor], List[torch.Tensor]]) -> None:
        buffers, saved = snapshot
        _copy_grouped(buffers, saved)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> StepResult:
        """One update on the batch; `epoch` may be fractional (KL annealing)."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, object]:
        state = {'optimizer': self.optimizer.state_dict()}
        if self.scaler is not None:
            state['scaler'] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.optimizer.load_state_dict(state['optimizer'])
        if self.scaler is not None and 'scaler' in state:
            self.scaler.load_state_dict(state['scaler'])


class SFSCStep(TrainStep):
    """The SFSC step: the supernet, one backward per width, each width's gradient of the shared parameters projected
    against the others' (PCGrad) and merged; private BatchNorm parameters (one width's) keep their own gradient.

    Per width, widest first, through the shared head (+ triplet): the widest width's loss (``widest_loss``) and each
    narrower width's (``width_loss``) is the SFSC paper's uncertainty-based compatible loss or cross-entropy; the
    width priorities (``priority``) weight them, the distillation and cross-width triplet terms join them. Method
    ``sfsc`` holds the public reference implementation's values (docs/design.md, "The SFSC step", says which part
    comes from the SFSC paper, which from the reference and which is ours); ``sfsc_ce_ens`` this project's remedy for
    many identities (docs/open_set.md).
    """
    options_class = SFSCOptions

    def __init__(self, net: nn.Module, cfg, dist_info: DistInfo):
        super().__init__(net, cfg, dist_info)
        options = self.options
        self.uncertainty_loss = UncertaintyCompatibleLoss(options.kl_coef, options.kl_anneal_epochs,
                                                          evidence=options.evidence,
                                                          label_smoothing=cfg.label_smoothing)

    def create_optimizer(self) -> torch.optim.Optimizer:
        inner = super().create_optimizer()
        # the projection order is drawn from its own generator, so runs (and resumed runs) are reproducible
        generator = torch.Generator().manual_seed(self.cfg.seed)
        options = self.options
        # a narrow width's gradient lives in the leading block of each shared weight: the projection reads only that
        return GradientProjection(inner, shared_params(self.net), num_tasks=len(self.widths), generator=generator,
                                  projection_mode='pcgrad' if options.projection == 'pcgrad' else 'sum',
                                  supports=width_gradient_supports(self.net, self.widths),
                                  granularity=options.projection_granularity, merge=options.gradient_merge)

    def width_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float
                     ) -> Tuple[List[torch.Tensor], List[Optional[torch.Tensor]]]:
        """Every width's loss (own loss plus distillation and the cross-width triplet, before its priority) and detached
        mean uncertainty, widest first. All forwards come first: the priorities need every width's uncertainty, and
        the distillation's teacher and the cross-width triplet need other widths' outputs."""
        outs = [self.forward_width(width, images) for width in self.widths]
        losses, uncertainties = [], []
        crosses = self.cross_width_triplets(outs, labels)
        for i, (out, distillation, cross) in enumerate(zip(outs, self.distillation_losses(outs), crosses)):
            loss, uncertainty = self.own_loss(out, labels, epoch, widest=i == 0)
            losses.append(_plus(_plus(loss, distillation), cross))
            uncertainties.append(uncertainty)
        return losses, uncertainties

    def own_loss(self, out: WidthOutput, labels: torch.Tensor, epoch: float, widest: bool = False
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the width's loss on the labels, its detached mean uncertainty): the uncertainty loss (+ triplet), or
        cross-entropy (+ triplet), whose uncertainty is then read from the logits' evidence (the priorities may need
        it)."""
        options = self.options
        if (options.widest_loss if widest else options.width_loss) == 'cross_entropy':
            alpha = evidence_to_alpha(out.logits.detach().float(), options.evidence)
            return self.classification_loss(out, labels), dirichlet_uncertainty(alpha).mean()
        evidential = self.uncertainty_loss(out.logits, labels, epoch)
        extra = self.metric_loss(out, labels)
        return (evidential.loss if extra is None else evidential.loss + extra), evidential.uncertainty

    def posterior_teacher(self, outs: List[WidthOutput]) -> Tuple[torch.Tensor, int]:
        """(the detached teacher logits the ``lambda_kd`` term distils at ``kd_temperature``, the first width that
        distils them): ``kd_teacher: widest``, the widest width's, into the narrower ones (Yu & Huang 2019);
        ``ensemble``, the mean class posterior of all widths, into every width (online ensemble distillation, Lan et
        al. 2018, Guo et al. 2020)."""
        if self.options.kd_teacher == 'widest':
            return outs[0].logits.detach(), 1
        t = self.options.kd_temperature
        with torch.no_grad():  # mean of the widths' posteriors at temperature t, as logits: softmax(t log p / t) = p
            probs = torch.stack([(out.logits.float() / t).softmax(-1) for out in outs])
            return t * probs.mean(0).clamp_min(1e-12).log(), 0

    def distillation_losses(self, outs: List[WidthOutput]) -> List[Optional[torch.Tensor]]:
        """Each width's in-place distillation term (None: none), given every width's forward pass, widest first:
        ``lambda_align`` x the narrower widths' cosine regression onto the widest width's detached embedding, and
        ``lambda_kd`` x KL of the :meth:`posterior_teacher`'s class posterior."""
        terms: List[Optional[torch.Tensor]] = [None] * len(outs)
        options = self.options
        if options.lambda_align > 0:
            terms[1:] = [options.lambda_align * embedding_regression(out.embedding, outs[0].embedding.detach())
                         for out in outs[1:]]
        if options.lambda_kd > 0:
            teacher, first = self.posterior_teacher(outs)
            for i in range(first, len(outs)):
                kd = options.lambda_kd * posterior_distillation(outs[i].logits, teacher, options.kd_temperature)
                terms[i] = kd if terms[i] is None else terms[i] + kd
        return terms

    def priorities(self, uncertainties: List[torch.Tensor]) -> torch.Tensor:
        """pi_w from the mean uncertainties, averaged over ranks first so every rank weights the widths alike."""
        if self.options.priority == 'uniform':
            return torch.ones(len(self.widths))
        u = torch.stack([x.float() for x in uncertainties])
        return width_priorities(all_reduce_mean_(u), mode=self.options.priority).cpu()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> StepResult:
        opt: GradientProjection = self.optimizer
        opt.zero_grad()
        snapshot = self._snapshot_norm_stats()
        losses, uncertainties = self.width_losses(images, labels, epoch)  # every forward before any backward
        values = torch.stack([loss.detach().float() for loss in losses])
        if any_rank(not bool(torch.isfinite(values).all()), self.dist.device):
            self._restore(snapshot)
            return StepResult(loss=float('nan'), width_losses=values.tolist(), skipped=True)
        priorities = self.priorities(list(uncertainties))
        for i, (loss, pi) in enumerate(zip(losses, priorities.tolist())):
            weighted = pi * loss
            (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()
            opt.collect(i)
        opt.step(grad_scaler=self.scaler, clip_grad=self.cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.update()
        # the widest width is task 0: its conflicts are what could cost the full width accuracy
        layer_pairs, layer_conflicts, layer_conflicts_widest = count_layer_conflicts(opt.last_layer_grams, task=0)
        return StepResult(loss=float((priorities.to(values) * values).sum()), width_losses=values.tolist(),
                          priorities=priorities.tolist(), num_conflicts=opt.last_num_conflicts,
                          uncertainties=[float(u) for u in uncertainties if u is not None],
                          layer_pairs=layer_pairs, layer_conflicts=layer_conflicts,
                          layer_conflicts_widest=layer_conflicts_widest)


class SummedLossStep(TrainStep):
    """Methods whose per-width losses are summed and minimised with one backward and the plain optimizer.

    Subclasses implement :meth:`batch_losses`; widths without a loss this step (a later stage) return None.
    """

    def width_classification_loss(self, width: float, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy through the classifier the network uses at `width` (+ triplet)."""
        return self.classification_loss(self.forward_width(width, images), labels)

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        snapshot = self._snapshot_norm_stats()
        losses = [loss for loss in self.batch_losses(images, labels, epoch)]
        active = [loss for loss in losses if loss is not None]
        values = torch.stack([loss.detach().float() for loss in active])
        width_losses = [float('nan') if loss is None else float(loss.detach()) for loss in losses]
        if any_rank(not bool(torch.isfinite(values).all()), self.dist.device):
            self._restore(snapshot)
            return StepResult(loss=float('nan'), width_losses=width_losses, skipped=True)
        total = torch.stack(active).sum()
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        # no DDP wrapper (it does not expect several forwards per backward): average the summed gradient ourselves
        params = [p for p in self.net.parameters() if p.grad is not None]
        all_reduce_grads(params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return StepResult(loss=float(values.sum()), width_losses=width_losses,
                          priorities=[0.0 if loss is None else 1.0 for loss in losses])


def _copy_grouped(destinations: List[torch.Tensor], sources: List[torch.Tensor]) -> None:
    """``d.copy_(s)`` for each pair, one multi-tensor copy per run of equal (device, dtype)."""
    start = 0
    for end in range(1, len(sources) + 1):
        if end == len(sources) or (sources[end].device, sources[end].dtype) != (sources[start].device,
                                                                                 sources[start].dtype):
            torch._foreach_copy_(destinations[start:end], sources[start:end])
            start = end


def _plus(loss: torch.Tensor, term: Optional[torch.Tensor]) -> torch.Tensor:
    return loss if term is None else loss + term


def _cross_entropy(label_smoothing: float) -> nn.Module:
    return LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing > 0 else nn.CrossEntropyLoss()


