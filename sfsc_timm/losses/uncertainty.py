""" SFSC uncertainty-based compatible loss and per-width priorities (docs/design.md, "The SFSC step"). """
from typing import NamedTuple, Sequence, Union

import torch
import torch.nn as nn

from .dirichlet import (
    EVIDENCE_FUNCTIONS, dirichlet_expected_ce, dirichlet_uncertainty, evidence_to_alpha, kl_dirichlet_to_uniform,
    remove_target_evidence, smooth_target,
)

__all__ = ['UncertaintyLossOutput', 'UncertaintyCompatibleLoss', 'width_priorities']


class UncertaintyLossOutput(NamedTuple):
    """What `UncertaintyCompatibleLoss` returns for one width.

    Attributes:
        loss: Scalar to minimise: `mean(expected_ce) + kl_weight * mean(kl)`.
        uncertainty: Mean `u = C / S` over the batch, detached (input of `width_priorities`).
        expected_ce: Mean expected cross-entropy, detached (logging).
        kl: Mean KL to the uniform Dirichlet, detached, before weighting (logging).
    """
    loss: torch.Tensor
    uncertainty: torch.Tensor
    expected_ce: torch.Tensor
    kl: torch.Tensor


class UncertaintyCompatibleLoss(nn.Module):
    """Evidential loss of one width: expected CE under `Dir(softplus(logits) + 1)` plus an annealed KL term.

    `loss = mean(dirichlet_expected_ce) + kl_coef * min(1, epoch / kl_anneal_epochs) * mean(KL(Dir(alpha~) || Dir(1)))`
    with `alpha~ = y + (1 - y) * alpha`. The annealing keeps the KL term from flattening every prediction before the
    network has learnt anything (the defaults follow Sensoy et al. 2018: coefficient 1 reached after 10 epochs).

    With `label_smoothing = eps > 0` the expected cross-entropy takes the smoothed target `(1 - eps) * y + eps / C`
    (`smooth_target`), the same target timm's label-smoothing cross-entropy uses, so a comparison between this loss
    and cross-entropy smooths both alike. The KL term keeps the unsmoothed `y`: it decides which evidence is
    misleading, and that is all evidence but the true class's.

    Args:
        kl_coef: Weight of the KL term once annealing is over.
        kl_anneal_epochs: Epochs over which the KL weight ramps linearly from 0; <= 0 disables the ramp.
        evidence: How logits become evidence: `'softplus'` (the SFSC paper's) or `'exp'` (see `evidence_to_alpha`).
        label_smoothing: `eps` in [0, 1) of the expected cross-entropy's target; 0: the one-hot target.
    """

    def __init__(self, kl_coef: float = 1.0, kl_anneal_epochs: float = 10.0, evidence: str = 'softplus',
                 label_smoothing: float = 0.0):
        super().__init__()
        if evidence not in EVIDENCE_FUNCTIONS:
            raise ValueError(f'unknown evidence function {evidence!r}; expected one of '
                             f'{", ".join(EVIDENCE_FUNCTIONS)}.')
        if not 0 <= label_smoothing < 1:
            raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}.')
        self.kl_coef = kl_coef
        self.kl_anneal_epochs = kl_anneal_epochs
        self.evidence = evidence
        self.label_smoothing = label_smoothing

    def kl_weight(self, epoch: float) -> float:
        """KL weight at (possibly fractional) `epoch`."""
        if self.kl_anneal_epochs <= 0:
            return self.kl_coef
        return self.kl_coef * min(1.0, max(0.0, epoch / self.kl_anneal_epochs))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: float) -> UncertaintyLossOutput:
        """Loss and mean uncertainty of one width.

        Args:
            logits: `(B, C)` classifier outputs.
            target: `(B,)` class indices or `(B, C)` class probabilities.
            epoch: Current (possibly fractional) epoch, for the KL annealing.
        """
        # digamma / lgamma lose too much precision in half precision, so compute in fp32 even under autocast
        alpha = evidence_to_alpha(logits.float(), self.evidence)
        ce_target = smooth_target(target, alpha, self.label_smoothing) if self.label_smoothing > 0 else target
        expected_ce = dirichlet_expected_ce(alpha, ce_target).mean()
        kl = kl_dirichlet_to_uniform(remove_target_evidence(alpha, target)).mean()
        return UncertaintyLossOutput(
            loss=expected_ce + self.kl_weight(epoch) * kl,
            uncertainty=dirichlet_uncertainty(alpha).mean().detach(),
            expected_ce=expected_ce.detach(),
            kl=kl.detach(),
        )

    def extra_repr(self) -> str:
        return (f'kl_coef={self.kl_coef}, kl_anneal_epochs={self.kl_anneal_epochs}, evidence={self.evidence!r}, '
                f'label_smoothing={self.label_smoothing}')


def width_priorities(
        mean_uncertainties: Union[torch.Tensor, Sequence[Union[torch.Tensor, float]]],
        mode: str = 'uncertainty',
) -> torch.Tensor:
    """Per-width loss weights `pi_w = m * u_w / sum_j u_j`; they sum to `m`, so the loss scale matches a plain sum.

    Less certain (usually narrower) widths get more weight. The result is detached: priorities steer the
    optimisation, they are not something to optimise.

    With ``mode='relative'`` the ratios are the same but the first width (the widest, in the step's widest-first
    order) keeps weight 1, ``pi_w = min(u_w / u_0, m)``: the narrower widths gain weight without the widest one losing
    any (docs/open_set.md, "Where the full width's accuracy goes"). The bound ``m`` is the largest weight the
    normalised form can give; without it a confident widest width (``u_0`` near 0) makes the ratio of two small
    numbers arbitrarily large, and one such batch can throw a long run off (docs/open_set.md, section 5).

    Args:
        mean_uncertainties: `m` mean uncertainties, one per width, widest first (tensor `(m,)` or scalars).
        mode: `'uncertainty'` (the SFSC paper's), `'relative'`, or `'uniform'` (all ones, the ablation).

    Returns:
        Tensor `(m,)` of priorities.
    """
    if isinstance(mean_uncertainties, torch.Tensor):
        u = mean_uncertainties.detach().reshape(-1)
    else:
        u = torch.stack([torch.as_tensor(x).detach().reshape(()) for x in mean_uncertainties])
    if not torch.is_floating_point(u):
        u = u.float()
    if mode == 'uniform':
        return torch.ones_like(u)
    if mode == 'relative':
        # 0 / 0 (every width's evidence overflowing) is a tie, not a NaN weight
        return torch.nan_to_num(u / u[0], nan=1.0).clamp(max=float(u.numel()))
    if mode != 'uncertainty':
        raise ValueError(f"Unknown priority mode '{mode}', expected 'uncertainty', 'relative' or 'uniform'.")
    return u.numel() * u / u.sum()
