""" PK sampling for metric learning: batches of P identities x K instances.

An epoch is about one pass over the data: every identity's images are shuffled and cut into chunks of K (an
identity with fewer than K images gives one chunk, filled up by sampling with replacement; leftovers < K are
dropped). The chunks are packed into the largest number B of batches in which no identity appears twice, then the
batches are shuffled. B depends only on the label counts, so every epoch has the same length. Under distributed
training the B batches are dealt round-robin to the ranks (B // world_size each), so the ranks get disjoint,
equal-length shares, each batch with P distinct identities.
"""
from typing import Iterator, Sequence, Union

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from .splits import column_array

__all__ = ['PKSampler']


def _max_batches(chunks: np.ndarray, p: int) -> int:
    """Largest B such that B batches of p distinct identities fit: sum(min(chunks, B)) >= p * B."""
    lo, hi = 0, int(chunks.sum()) // p
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(chunks, mid).sum() >= p * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PKSampler(Sampler[int]):
    """Yield dataset indices in batches of P identities x K instances.

    Use with `DataLoader(ds, batch_size=sampler.batch_size, sampler=sampler)`. Each consecutive block of P * K
    indices is one batch: P groups of K indices, each group one identity, the P identities distinct. Deterministic
    given `seed` and the epoch set with `set_epoch`.

    Args:
        labels: Identity of each dataset item (sequence, numpy array, tensor, or a dataset with a `label` column).
        num_identities_per_batch: P, identities per batch (per rank).
        num_instances: K, images per identity in a batch.
        seed: Base random seed, the same on every rank.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
            self,
            labels: Union[Sequence[int], np.ndarray, torch.Tensor, datasets.Dataset],
            num_identities_per_batch: int,
            num_instances: int,
            *,
            seed: int = 0,
            rank: int = 0,
            world_size: int = 1,
    ):
        if num_instances < 1:
            raise ValueError(f'num_instances (K) must be >= 1, got {num_instances}')
        if num_identities_per_batch < 1:
            raise ValueError(f'num_identities_per_batch (P) must be >= 1, got {num_identities_per_batch}')
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'need 0 <= rank < world_size, got rank={rank}, world_size={world_size}')
        if isinstance(labels, datasets.Dataset):
            labels = column_array(labels, 'label')
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f'labels must be 1-D, got shape {labels.shape}')
        identities, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if len(identities) < num_identities_per_batch:
            raise ValueError(
                f'{len(identities)} identities cannot fill batches of P={num_identities_per_batch} distinct '
                f'identities; lower num_identities_per_batch')
        self.p, self.k = num_identities_per_batch, num_instances
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        order = np.argsort(inverse, kind='stable')
        self._groups = np.split(order, np.cumsum(counts)[:-1])  # item indices of each identity
        self._chunks = np.maximum(1, counts // num_instances)
        self.num_batches_total = _max_batches(self._chunks, self.p)
        self.num_batches = self.num_batches_total // world_size
        if self.num_batches == 0:
            raise ValueError(
                f'only {self.num_batches_total} PK batches per epoch, fewer than world_size={world_size}; lower P or K')

    @property
    def batch_size(self) -> int:
        """P * K, the DataLoader batch size to use with this sampler."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; the order is a function of (seed, epoch)."""
        self.epoch = epoch

    def global_batches(self) -> np.ndarray:
        """All ranks' batches of this epoch, shape (num_batches_total, P * K)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        num_batches, k = self.num_batches_total, self.k
        chunks = []
        for identity in rng.permutation(len(self._groups)):
            items = rng.permutation(self._groups[identity])
            if len(items) < k:  # every image once, the rest drawn with replacement
                items = rng.permutation(np.concatenate([items, rng.choice(items, k - len(items))]))
            num = min(self._chunks[identity], num_batches)
            chunks.append(items[:num * k].reshape(num, k))
        # identity blocks are contiguous and no longer than num_batches: dealing chunk j to batch j % num_batches
        # puts no identity twice in a batch
        chunks = np.concatenate(chunks)[:self.p * num_batches]
        batches = chunks.reshape(self.p, num_batches, k).transpose(1, 0, 2)
        return batches[rng.permutation(num_batches)].reshape(num_batches, self.p * k)

    def __iter__(self) -> Iterator[int]:
        batches = self.global_batches()[self.rank::self.world_size][:self.num_batches]
        return iter(batches.reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_batches * self.p * self.k
