""" A `datasets.Dataset` as a map-style torch dataset for `torch.utils.data.DataLoader`.

Each item is the tuple `(image, label, camera, index)`: the transformed image (a tensor with the transforms of
`build_transforms`), the int label, the int camera (-1 when the dataset has no `camera` column) and the item's
position in the dataset. The default collate turns a batch into `(images (B, 3, H, W), labels (B,), cameras (B,),
indices (B,))`. Decoding and transforming run through `Dataset.with_transform`, one batched read per DataLoader
batch (`__getitems__`).
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

import datasets
import torch.utils.data

__all__ = ['TransformedImageDataset', 'with_image_transform']

Sample = Tuple[Any, int, int, int]


class _BatchTransform:
    """Apply an image transform to a formatted batch and fill in a missing camera with -1 (picklable)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, batch: Dict[str, list]) -> Dict[str, list]:
        images = batch['image']
        return {
            'image': [self.transform(img) for img in images],
            'label': batch['label'],
            'camera': batch['camera'] if 'camera' in batch else [-1] * len(images),
        }


class TransformedImageDataset(torch.utils.data.Dataset):
    """Map-style torch dataset over a `datasets.Dataset` with `image`, `label` and optional `camera` columns.

    Args:
        ds: The dataset (e.g. a split of `RetrievalData`).
        transform: PIL image -> tensor (e.g. from `build_transforms`).
    """

    def __init__(self, ds: datasets.Dataset, transform: Callable):
        columns = [c for c in ('image', 'label', 'camera') if c in ds.column_names]
        if columns[:2] != ['image', 'label']:
            raise ValueError(f'the dataset needs `image` and `label` columns; it has {ds.column_names}')
        self.dataset = ds
        self._formatted = ds.with_transform(_BatchTransform(transform), columns=columns)

    def __len__(self) -> int:
        return len(self._formatted)

    def __getitems__(self, indices: Sequence[int]) -> List[Sample]:
        indices = [int(i) for i in indices]
        batch = self._formatted[indices]
        return list(zip(batch['image'], batch['label'], batch['camera'], indices))

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]


def with_image_transform(ds: datasets.Dataset, transform: Callable) -> TransformedImageDataset:
    """Wrap `ds` for a torch DataLoader; items are `(image tensor, label, camera or -1, index)`."""
    return TransformedImageDataset(ds, transform)
