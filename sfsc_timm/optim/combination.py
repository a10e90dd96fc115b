""" How per-task gradients become one update: an object that turns their Gram matrix into one weight per task.

The update is always ``sum_i weights[i] * g_i``. :class:`PCGrad` (the SFSC projection) decides the weights from the
``m x m`` Gram matrix ``G[i][j] = g_i . g_j``; :class:`Sum` (the no-projection ablation) needs no Gram matrix at all.
Either merges the tasks' (projected) gradients by their sum or by their mean (``merge``; the public SFSC reference's
PCGrad takes the mean over the widths of the parameters they all share, docs/design.md "The SFSC step").
Keeping the decision apart from the gradient plumbing (:class:`~sfsc_timm.optim.GradientProjection`) is what lets
the same plumbing serve every combination, and lets the arithmetic be tested on plain matrices.
"""
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ['GradientCombination', 'MERGES', 'PCGrad', 'Sum', 'pcgrad_coefficients']

MERGES = ('sum', 'mean')


class GradientCombination(ABC):
    """Decides the weight of each task's gradient in the update.

    Args:
        merge: How the tasks' (projected) gradients are merged: ``'sum'`` or ``'mean'`` (the sum divided by the number
            of tasks).

    Attributes:
        needs_gram: Whether :meth:`weights` reads the Gram matrix (when False it is passed None and never computed).
        last_num_conflicts: Projections made by the last :meth:`weights` call.
        num_conflicts_total: Running total of projections.
    """

    needs_gram: bool = True

    def __init__(self, merge: str = 'sum'):
        if merge not in MERGES:
            raise ValueError(f"Unknown merge {merge!r}, expected one of {MERGES}.")
        self.merge = merge
        self.last_num_conflicts = 0
        self.num_conflicts_total = 0

    def merged(self, summed: torch.Tensor) -> torch.Tensor:
        """The ``(m,)`` weights of the merge, from those of the sum."""
        return summed / summed.numel() if self.merge == 'mean' else summed

    @abstractmethod
    def weights(self, gram: Optional[torch.Tensor], num_tasks: int) -> torch.Tensor:
        """``(m,)`` float64 CPU weights of the tasks' gradients, from the ``(m, m)`` Gram matrix (None when
        ``needs_gram`` is False)."""

    def agreeing_weights(self, num_tasks: int) -> Optional[torch.Tensor]:
        """The weights :meth:`weights` gives when no two gradients conflict (every off-diagonal Gram entry finite and
        ``>= 0``), without the diagonal; None when they depend on the norms too (then the whole Gram matrix is
        computed). Taking the same side effects as :meth:`weights` (random draws, counters) is part of the contract."""
        return None

    def skip(self) -> None:
        """Record a step whose gradients were not combined by :meth:`weights` (non-finite ones are summed)."""
        self.last_num_conflicts = 0

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs to continue exactly (random state, counters)."""
        return {'num_conflicts_total': self.num_conflicts_total}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.num_conflicts_total = int(state.get('num_conflicts_total', 0))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(merge={self.merge!r})'


class Sum(GradientCombination):
    """Every task's gradient with weight 1, or ``1 / m`` with ``merge='mean'``: no projection (the ``sfsc_no_proj``
    ablation)."""

    needs_gram = False

    def weights(self, gram: Optional[torch.Tensor], num_tasks: int) -> torch.Tensor:
        self.last_num_conflicts = 0
        return self.merged(torch.ones(num_tasks, dtype=torch.float64))


def pcgrad_coefficients(gram: List[List[float]], generator: Optional[torch.Generator]) -> Tuple[List[List[float]], int]:
    """PCGrad's decisions on a Gram matrix: row ``i`` expresses the projected ``g_i`` over the original gradients.

    For each task ``i`` a permutation of the tasks is drawn with ``torch.randperm(m, generator=generator)``; walking
    it (skipping ``j == i`` and zero-norm ``g_j``), whenever ``g_i . g_j < 0`` the current ``g_i`` becomes
    ``g_i - (g_i . g_j / |g_j|^2) g_j`` with the original ``g_j``. A projection only changes the coefficient of
    ``g_j``, and ``g_i' . g_j = c_i . G[:, j]``, so the Gram matrix is all it needs.

    Returns:
        (coefficient rows, number of projections made).
    """
    m = len(gram)
    device = generator.device if generator is not None else torch.device('cpu')
    coefficients = []
    num_conflicts = 0
    for i in range(m):
        c = [0.] * m
        c[i] = 1.
        # a fresh order per task, as in PCGrad, drawn for every i so the generator advances the same way each call
        order = torch.randperm(m, generator=generator, device=device).tolist()
        for j in order:
            if j == i or gram[j][j] <= 0.:
                continue  # zero-norm g_j: nothing to project onto
            dot = sum(c[k] * gram[k][j] for k in range(m))
            if dot < 0.:
                c[j] -= dot / gram[j][j]
                num_conflicts += 1
        coefficients.append(c)
    return coefficients, num_conflicts


class PCGrad(GradientCombination):
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): each task's gradient is projected onto
    the normal plane of every other task's gradient it conflicts with, in a random order; the update is the sum (or,
    ``merge='mean'``, the mean) of the projected gradients.

    Args:
        generator: Source of the random orders; a fresh one seeded from torch's global RNG when None, so that
            ``torch.manual_seed`` makes runs reproducible.
        merge: ``'sum'`` (PCGrad's) or ``'mean'``.
    """

    def __init__(self, generator: Optional[torch.Generator] = None, merge: str = 'sum'):
        super().__init__(merge)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        self.generator = generator
        self.last_coefficients: Optional[torch.Tensor] = None

    def weights(self, gram: Optional[torch.Tensor], num_tasks: int) -> torch.Tensor:
        # the scalar work is tiny: do it on the host in float64, one device sync, no precision worries
        rows = gram.double().cpu().tolist()
        coefficients, self.last_num_conflicts = pcgrad_coefficients(rows, self.generator)
        self.num_conflicts_total += self.last_num_conflicts
        self.last_coefficients = torch.tensor(coefficients, dtype=torch.float64).reshape(num_tasks, num_tasks)
        return self.merged(self.last_coefficients.sum(0))

    def agreeing_weights(self, num_tasks: int) -> torch.Tensor:
        # nothing to project: every coefficient row is its own task's, but the orders are drawn all the same, so the
        # generator (and every later step) is where the Gram matrix path would have left it
        for _ in range(num_tasks):
            torch.randperm(num_tasks, generator=self.generator, device=self.generator.device)
        self.last_num_conflicts = 0
        self.last_coefficients = torch.eye(num_tasks, dtype=torch.float64)
        return self.merged(torch.ones(num_tasks, dtype=torch.float64))

    def state_dict(self) -> Dict[str, Any]:
        return dict(super().state_dict(), generator_state=self.generator.get_state())

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        if 'generator_state' in state:
            # map_location may have moved the state to an accelerator; generator states live on the CPU
            self.generator.set_state(state['generator_state'].cpu())

    def __repr__(self) -> str:
        return f'{type(self).__name__}(generator={self.generator!r}, merge={self.merge!r})'
