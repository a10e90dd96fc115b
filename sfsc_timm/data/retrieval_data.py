""" The retrieval data container: train / query / gallery splits of one dataset.

Every split is a `datasets.Dataset` with the columns `image` (`datasets.Image`), `label` (int class / identity)
and, when the source knows it, `camera` (int, 0-based).
"""
from dataclasses import dataclass
from typing import Optional

import datasets

__all__ = ['RetrievalData']


@dataclass
class RetrievalData:
    """Train, query and gallery splits of one retrieval dataset.

    Attributes:
        train: Training split; labels are 0..num_classes-1 (None where evaluation loaded a source without one).
        query: Query split; labels are comparable with the gallery's (not necessarily with train's).
        gallery: Gallery split searched by the queries.
        num_classes: Number of training classes / identities (the classifier size).
        name: Short name of the source (e.g. 'fashion_mnist', a folder name or a Hub id).
    """
    train: Optional[datasets.Dataset]
    query: datasets.Dataset
    gallery: datasets.Dataset
    num_classes: int
    name: str

    @property
    def has_cameras(self) -> bool:
        """True when query and gallery carry a `camera` column (the re-ID same-camera rule applies)."""
        return 'camera' in self.query.column_names and 'camera' in self.gallery.column_names

    def split(self, name: str) -> datasets.Dataset:
        """The split called `name` ('train', 'query' or 'gallery')."""
        if name not in ('train', 'query', 'gallery'):
            raise ValueError(f"unknown split {name!r}; expected 'train', 'query' or 'gallery'")
        return getattr(self, name)

    def __repr__(self) -> str:
        sizes = ', '.join(f'{s}={len(getattr(self, s)):,}' for s in ('train', 'query', 'gallery'))
        return f'RetrievalData({self.name!r}: {sizes}, num_classes={self.num_classes}, cameras={self.has_cameras})'
