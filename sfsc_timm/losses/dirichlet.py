""" Dirichlet (evidential) helpers for the SFSC uncertainty-based compatible loss.

Logits are read as evidence for a Dirichlet over class probabilities (Sensoy et al. 2018, "Evidential Deep Learning").
Every function works on the last dimension (classes) and keeps the leading ones, so `(B, C)` gives `(B,)`.

`target` is either class indices (shape of `alpha` without the last dimension, integer dtype) or per-class
probabilities with the shape of `alpha` (one-hot, label-smoothed or mixed targets); the formulas are linear in `y`.
"""
import math

import torch
import torch.nn.functional as F

__all__ = [
    'EVIDENCE_FUNCTIONS', 'evidence_to_alpha', 'dirichlet_uncertainty', 'dirichlet_expected_ce',
    'remove_target_evidence', 'kl_dirichlet_to_uniform', 'smooth_target',
]


def _target_probs(target: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Class indices -> one-hot in alpha's dtype; probability targets pass through."""
    if target.dim() == alpha.dim():
        return target.to(alpha.dtype)
    return F.one_hot(target.long(), alpha.shape[-1]).to(alpha.dtype)


def smooth_target(target: torch.Tensor, alpha: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed class probabilities `(1 - smoothing) * y + smoothing / C`, shaped and typed like `alpha`.

    The target timm's `LabelSmoothingCrossEntropy` puts under the log-softmax; in `dirichlet_expected_ce` it gives
    `sum_c y_c (digamma(S) - digamma(alpha_c))` with the smoothed `y`.

    Args:
        target: Class indices or class probabilities (as everywhere in this module).
        alpha: Concentrations `(..., C)`: the number of classes, the shape and the dtype.
        smoothing: Probability mass spread evenly over all `C` classes, in [0, 1].
    """
    y = _target_probs(target, alpha)
    return y if smoothing == 0 else (1. - smoothing) * y + smoothing / alpha.shape[-1]


EVIDENCE_FUNCTIONS = ('softplus', 'exp')
_EXP_LOGIT_MAX = 60.  # exp(60) ~ 1e26 is far beyond any useful evidence and far from fp32 overflow


def evidence_to_alpha(logits: torch.Tensor, evidence: str = 'softplus') -> torch.Tensor:
    """Dirichlet concentration from logits: `alpha = evidence(logits) + 1` (evidence is non-negative).

    Args:
        logits: `(..., C)` classifier outputs.
        evidence: `'softplus'` (the SFSC paper's choice, linear in the logit for large logits) or `'exp'` (Sensoy et
            al. 2018 list both). With `'exp'` the expected cross-entropy's gradient is `alpha_c / S - y_c`, that
            of softmax cross-entropy with `C` extra pseudo-counts in the denominator, whatever the number of classes;
            with `'softplus'` the target logit must grow to about `C` before the loss drops, which is slow with
            hundreds of identities (measured in docs/open_set.md).
    """
    if evidence == 'softplus':
        return F.softplus(logits) + 1.
    if evidence == 'exp':
        return torch.exp(logits.clamp(max=_EXP_LOGIT_MAX)) + 1.
    raise ValueError(f'unknown evidence function {evidence!r}; expected one of {", ".join(EVIDENCE_FUNCTIONS)}.')


def dirichlet_uncertainty(alpha: torch.Tensor) -> torch.Tensor:
    """Subjective-logic uncertainty `u = C / S` with `S = sum_c alpha_c`, in (0, 1]; 1 means no evidence at all."""
    return alpha.shape[-1] / alpha.sum(-1)


def dirichlet_expected_ce(alpha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy expected under `Dir(p | alpha)`, per sample.

    Closed form of `integral [sum_c -y_c log p_c] Dir(p | alpha) dp = sum_c y_c (digamma(S) - digamma(alpha_c))`,
    using `E[log p_c] = digamma(alpha_c) - digamma(S)`.

    Args:
        alpha: Concentrations `(..., C)`, all > 0.
        target: Class indices `(...)` or class probabilities `(..., C)`.

    Returns:
        Loss per sample, shape `(...)`.
    """
    digamma_sum = torch.digamma(alpha.sum(-1))
    if target.dim() == alpha.dim():
        return (target.to(alpha.dtype) * (digamma_sum.unsqueeze(-1) - torch.digamma(alpha))).sum(-1)
    # indices: only the target's term is non-zero, so skip building a one-hot
    alpha_target = alpha.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    return digamma_sum - torch.digamma(alpha_target)


def remove_target_evidence(alpha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`alpha~ = y + (1 - y) * alpha`: sets the target class's concentration to 1 (no evidence).

    The KL regulariser should only penalise misleading evidence; the target's evidence is what the expected
    cross-entropy rewards, so it is removed before comparing with the uniform Dirichlet.
    """
    y = _target_probs(target, alpha)
    return y + (1. - y) * alpha


def kl_dirichlet_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """`KL(Dir(alpha) || Dir(1))` per sample, closed form.

    `lgamma(S) - lgamma(C) - sum_c lgamma(alpha_c) + sum_c (alpha_c - 1) (digamma(alpha_c) - digamma(S))`.

    Args:
        alpha: Concentrations `(..., C)`, all > 0 (usually `remove_target_evidence(alpha, target)`).

    Returns:
        KL divergence per sample, shape `(...)`.
    """
    num_classes = alpha.shape[-1]
    alpha_sum = alpha.sum(-1)
    return (
        torch.lgamma(alpha_sum) - math.lgamma(num_classes) - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1.) * (torch.digamma(alpha) - torch.digamma(alpha_sum).unsqueeze(-1))).sum(-1)
    )
