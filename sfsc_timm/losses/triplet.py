""" Batch-hard triplet loss (Hermans, Beyer and Leibe 2017, "In Defense of the Triplet Loss for Person Re-ID"), within
one embedding space and across two (anchors from one width, positives and negatives from another). """
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['BatchHardTripletLoss', 'cross_batch_hard_triplet', 'pairwise_euclidean']


def pairwise_euclidean(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix of the rows of `x` `(B, D)` -> `(B, B)`.

    Squared distances are clamped at `eps` before the square root, so the gradient stays finite for coincident points.
    """
    sq_norm = x.pow(2).sum(1)
    sq_dist = sq_norm.unsqueeze(1) + sq_norm.unsqueeze(0) - 2. * x @ x.t()
    return sq_dist.clamp_min(eps).sqrt()


def _hardest_pairs(dist: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
                   ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Batch-hard mining on an anchors x candidates distance matrix with boolean masks of each anchor's positives
    and negatives: (distance to the farthest positive, to the closest negative) of every anchor that has both, or
    None when no anchor has."""
    valid = positive.any(1) & negative.any(1)
    if not valid.any():
        return None
    return (dist.masked_fill(~positive, float('-inf')).amax(1)[valid],
            dist.masked_fill(~negative, float('inf')).amin(1)[valid])


class BatchHardTripletLoss(nn.Module):
    """For each anchor: the farthest same-label sample and the closest other-label sample in the batch.

    `loss_a = relu(d(a, hardest positive) - d(a, hardest negative) + margin)`, or with `soft_margin=True`
    `softplus(d_ap - d_an)` (no margin, never exactly zero). The result is the mean over anchors.

    Anchors without any positive (a label seen once in the batch) or without any negative (a single-label batch)
    define no triplet: they are excluded from the mean. A batch without any valid anchor gives a zero that is
    still connected to the graph, so `backward()` works and yields zero gradients.

    Args:
        margin: Margin of the hinge (ignored with `soft_margin`).
        normalize: L2-normalise embeddings first (distances then lie in [0, 2]).
        soft_margin: Use `softplus` instead of the hinge.
    """

    def __init__(self, margin: float = 0.3, normalize: bool = False, soft_margin: bool = False):
        super().__init__()
        self.margin = margin
        self.normalize = normalize
        self.soft_margin = soft_margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean batch-hard triplet loss of `embeddings` `(B, D)` with integer `labels` `(B,)`."""
        # distances of low-precision embeddings suffer from cancellation in the |a|^2 + |b|^2 - 2ab expansion
        x = embeddings.float()
        if self.normalize:
            x = F.normalize(x, dim=1)
        dist = pairwise_euclidean(x)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        hardest = _hardest_pairs(dist, positive=same & ~eye, negative=~same)
        if hardest is None:
            return embeddings.sum() * 0.
        dist_ap, dist_an = hardest
        if self.soft_margin:
            loss = F.softplus(dist_ap - dist_an)
        else:
            loss = F.relu(dist_ap - dist_an + self.margin)
        return loss.mean()

    def extra_repr(self) -> str:
        return f'margin={self.margin}, normalize={self.normalize}, soft_margin={self.soft_margin}'


def cross_batch_hard_triplet(anchors: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor,
                             margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss across two embedding spaces: each anchor's positives and negatives are `candidates`.

    ``anchors`` and ``candidates`` are two embeddings of the same batch (two widths of one network, say): for anchor
    ``i``, the hardest positive is the farthest candidate with its label, the candidate of its own image included (so
    every anchor has a positive whatever the sampler), the hardest negative the closest candidate of another label.
    ``loss_i = relu(d(a_i, hardest positive) - d(a_i, hardest negative) + margin)`` on L2-normalised embeddings
    (distances in [0, 2], as retrieval ranks by cosine); the mean over anchors with a negative. The cross-width
    ranking loss of compatible learning (a query of one model against a gallery of the other, Shen et al. 2020's
    setting; Budnik & Avrithis 2021 with the triplet loss): it asks for what retrieval across widths needs, the right
    order of the other width's gallery, rather than the same point (regression) or the same posterior (distillation).

    Args:
        anchors: ``(B, D)`` the query side; gradients flow into it.
        candidates: ``(B, D)`` the gallery side, the same images in the same order; used as given (detach it to leave
            that side untrained).
        labels: ``(B,)`` integer labels.
        margin: Margin of the hinge, in units of the normalised embeddings' distance.

    Returns:
        The scalar loss (a zero connected to the graph when no anchor has a negative: a single-label batch).
    """
    if anchors.shape != candidates.shape:
        raise ValueError(f'anchors {tuple(anchors.shape)} and candidates {tuple(candidates.shape)} must be embeddings '
                         'of the same batch, of the same size.')
    # low-precision embeddings lose the small distances in the |a|^2 + |b|^2 - 2ab expansion
    a = F.normalize(anchors.float(), dim=1)
    c = F.normalize(candidates.float(), dim=1)
    dist = (2. - 2. * a @ c.t()).clamp_min(1e-12).sqrt()  # unit vectors: |a - c|^2 = 2 - 2 cos
    same = labels.unsqueeze(1) == labels.unsqueeze(0)  # the diagonal (the anchor's own image) is a positive
    hardest = _hardest_pairs(dist, positive=same, negative=~same)
    if hardest is None:
        return anchors.sum() * 0. + candidates.sum() * 0.
    dist_ap, dist_an = hardest
    return F.relu(dist_ap - dist_an + margin).mean()
