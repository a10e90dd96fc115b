""" Label-aware index selection: query carving, balanced subsets, relabelling.

All functions work on 1-D integer label arrays and return sorted index arrays, so the selected items keep the
dataset's order. `column_array` reads one column of a `datasets.Dataset` into numpy without decoding images.
"""
from typing import Optional, Sequence, Tuple

import datasets
import numpy as np

__all__ = [
    'column_array', 'first_per_class', 'pick_queries', 'balanced_subset', 'contiguous_labels', 'relabel_contiguous',
]


def column_array(ds: datasets.Dataset, name: str) -> np.ndarray:
    """Read one column of `ds` as a numpy array (honours `select` index mappings, decodes nothing)."""
    return ds.with_format('arrow', columns=[name])[:][name].to_numpy()


def _within_class_rank(labels: np.ndarray) -> np.ndarray:
    """Position of each item among the items of its class, in data order (0 for the first of each class)."""
    order = np.argsort(labels, kind='stable')
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - np.repeat(starts, sizes)
    return rank


def first_per_class(labels: Sequence[int], n: int) -> np.ndarray:
    """Indices of the first `n` items of every class, in data order.

    Args:
        labels: Class / identity of each item.
        n: Items kept per class (a class with fewer keeps all of them).

    Returns:
        Sorted int64 indices.
    """
    if n < 1:
        raise ValueError(f'n (items per class) must be >= 1, got {n}')
    labels = np.asarray(labels)
    return np.flatnonzero(_within_class_rank(labels) < n)


def pick_queries(
        labels: Sequence[int],
        per_class: int,
        *,
        cameras: Optional[Sequence[int]] = None,
        seed: int = 0,
) -> np.ndarray:
    """Queries for a retrieval split: `per_class` items of every class, each from a different camera when possible.

    Market-1501 style: a class's queries come from distinct cameras (cameras drawn at random, then one random item
    of each), so that with the re-ID camera rule every query still has positives in the other cameras. Without
    cameras, `per_class` random items of each class. A class never gives all of its items: at least one stays in
    the gallery.

    Args:
        labels: Class / identity of each item.
        per_class: Queries per class.
        cameras: Camera of each item, or None.
        seed: Seed of the choice.

    Returns:
        Sorted int64 indices of the queries.
    """
    if per_class < 1:
        raise ValueError(f'per_class (queries per class) must be >= 1, got {per_class}')
    labels = np.asarray(labels)
    cameras = np.zeros(len(labels), dtype=np.int64) if cameras is None else np.asarray(cameras)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = min(per_class, len(members) - 1)
        # one item per camera first (cameras in random order), then the remaining items
        _, first_of_camera = np.unique(cameras[members], return_index=True)
        spread = members[rng.permutation(first_of_camera)]
        rest = np.setdiff1d(members, spread, assume_unique=True)
        chosen.append(np.concatenate([spread, rng.permutation(rest)])[:take])
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def balanced_subset(
        labels: Sequence[int],
        max_items: int,
        *,
        seed: Optional[int] = None,
        priority_classes: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """A deterministic class-balanced subset of at most `max_items` items.

    Items are taken round-robin over classes: the first item of every class, then the second of every class, and
    so on, so every class is represented whenever `max_items` >= the number of classes. Within a class, items are
    taken in data order (`seed=None`) or in a seeded random order. Classes in `priority_classes` go first in each
    round (used to keep every query identity in a gallery subset).

    Args:
        labels: Class / identity of each item.
        max_items: Size of the subset; the whole range when >= len(labels).
        seed: None for the first items of each class, an int for a seeded random choice within each class.
        priority_classes: Classes served first in each round.

    Returns:
        Sorted int64 indices.
    """
    if max_items < 1:
        raise ValueError(f'max_items must be >= 1, got {max_items}')
    labels = np.asarray(labels)
    n = len(labels)
    if max_items >= n:
        return np.arange(n)
    perm = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = _within_class_rank(labels[perm])
    class_pos = np.searchsorted(np.unique(labels), labels)
    late = np.zeros(n, dtype=bool) if priority_classes is None else ~np.isin(labels, np.asarray(priority_classes))
    order = np.lexsort((class_pos, late, rank))  # last key is the primary one
    return np.sort(order[:max_items])


def contiguous_labels(labels: Sequence[int]) -> Tuple[np.ndarray, int]:
    """Map labels to 0..N-1 in sorted order of the original values; returns (new labels, N)."""
    unique, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.astype(np.int64), len(unique)


def relabel_contiguous(ds: datasets.Dataset, column: str = 'label') -> Tuple[datasets.Dataset, int]:
    """Relabel `ds[column]` to 0..N-1 unless it already is; returns (dataset, N).

    Labels that already cover 0..N-1 are left untouched. A `ClassLabel` keeps the names of the classes that remain.
    """
    labels = column_array(ds, column)
    new, num = contiguous_labels(labels)
    if np.array_equal(new, labels):
        return ds, num
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        feature = datasets.ClassLabel(names=[feature.names[c] for c in np.unique(labels)])
    else:
        feature = datasets.Value('int64')
    order = ds.column_names
    ds = ds.remove_columns(column).add_column(column, new, feature=feature)
    return ds.select_columns(order), num
