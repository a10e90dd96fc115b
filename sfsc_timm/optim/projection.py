""" PCGrad-style projection of conflicting task gradients, computed in coefficient space.

Yu et al. 2020 ("Gradient Surgery for Multi-Task Learning") project each task gradient `g_i` onto the normal plane of
every other task gradient `g_j` it conflicts with (`g_i . g_j < 0`), visiting the `j` in a random order and always
using `g_j` as originally computed, then sum the projected gradients.

Every projected `g_i` stays a linear combination of the original gradients, `g_i' = sum_k c_ik g_k`, and a projection
only changes the coefficient of `g_j`. So all the decisions need only the `m x m` Gram matrix `G = grads @ grads.T`:
`g_i' . g_j = c_i . G[:, j]`. The cost is one Gram matrix, `m^2` scalar steps on the host, and one `(m,) @ (m, P)`
combination, instead of `O(m^2)` passes over the `P` parameters.
"""
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from .combination import pcgrad_coefficients

__all__ = ['ProjectionStats', 'project_conflicting', 'gram_matrix', 'count_layer_conflicts']


@dataclass
class ProjectionStats:
    """Diagnostics of one `project_conflicting` call.

    Attributes:
        num_conflicts: Number of `(i, j)` visits where the (partly projected) `g_i` conflicted with `g_j` and was
            projected; at most `m * (m - 1)`.
        coefficients: `(m, m)` float64 on the CPU; row `i` expresses the projected `g_i` over the original gradients.
    """
    num_conflicts: int
    coefficients: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """`(m,)` weights of the original gradients in the update (`coefficients.sum(0)`)."""
        return self.coefficients.sum(0)


def gram_matrix(grads: torch.Tensor, pairwise: Optional[bool] = None) -> torch.Tensor:
    """`grads @ grads.T` in the full precision of `grads`.

    On accelerators a matmul may run in reduced precision (TF32 is allowed by many training scripts), which would blur
    the signs that decide conflicts; `m (m + 1) / 2` plain dot products avoid that and cost little for a few tasks.

    Args:
        grads: `(m, P)` gradients.
        pairwise: Use dot products instead of one matmul; by default only off the CPU.
    """
    if pairwise is None:
        pairwise = grads.device.type != 'cpu'
    if not pairwise:
        return grads @ grads.t()
    m = grads.shape[0]
    gram = grads.new_empty(m, m)
    for i in range(m):
        for j in range(i, m):
            gram[i, j] = gram[j, i] = torch.dot(grads[i], grads[j])
    return gram


def project_conflicting(
        grads: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_stats: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, ProjectionStats]]:
    """Sum of PCGrad-projected task gradients.

    For each task `i` a permutation of the tasks is drawn with `torch.randperm(m, generator=generator)`; walking it
    (skipping `j == i` and zero-norm `g_j`), whenever `g_i . g_j < 0` the current `g_i` becomes
    `g_i - (g_i . g_j / |g_j|^2) g_j` with the original `g_j`. The result is `sum_i g_i`.

    Args:
        grads: `(m, P)` one flattened gradient per task.
        generator: Source of the random orders (CPU or the generator's device); the global RNG when None.
        return_stats: Also return a `ProjectionStats`.

    Returns:
        `(P,)` update in the dtype and device of `grads`, plus `ProjectionStats` when `return_stats`.
    """
    if grads.dim() != 2:
        raise ValueError(f'grads must be (num_tasks, num_params), got shape {tuple(grads.shape)}.')
    # the scalar work is tiny, so do it on the host in float64: one device sync, no precision worries
    gram = gram_matrix(grads).double().cpu().tolist()
    coefficients, num_conflicts = pcgrad_coefficients(gram, generator)
    coefficients = torch.tensor(coefficients, dtype=torch.float64).reshape(grads.shape[0], grads.shape[0])
    weights = coefficients.sum(0).to(device=grads.device, dtype=grads.dtype)
    update = weights @ grads
    if return_stats:
        return update, ProjectionStats(num_conflicts=num_conflicts, coefficients=coefficients)
    return update


def count_layer_conflicts(grams: Optional[torch.Tensor], task: int = 0) -> Tuple[int, int, int]:
    """How often tasks pull a layer apart, from per-parameter Gram matrices.

    Args:
        grams: ``(K, m, m)`` Gram matrices, one per parameter (`GradientProjection.last_layer_grams`), or None.
        task: The task whose conflicts are also counted apart (the trainer's widest width is task 0).

    Returns:
        (pairs compared, pairs with a negative dot product, of those the ones involving `task`): over every parameter
        and every pair ``i < j`` of tasks that both reached it (a non-zero squared norm on the diagonal, or NaN: not
        computed, `GradientProjection.last_layer_grams`). Zeros when `grams` is None.
    """
    if grams is None:
        return 0, 0, 0
    m = grams.shape[-1]
    i, j = torch.triu_indices(m, m, offset=1)
    norms = grams.diagonal(dim1=-2, dim2=-1)
    compared = (norms[:, i] != 0) & (norms[:, j] != 0)
    negative = compared & (grams[:, i, j] < 0)
    with_task = (i == task) | (j == task)
    return int(compared.sum()), int(negative.sum()), int(negative[:, with_task].sum())
