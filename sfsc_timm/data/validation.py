""" Validation carved from the training split, so that choosing a checkpoint never reads the query / gallery.

Two ways, as re-ID practice has them:

* `identities` (open-set, the default when there are enough identities): a seeded tenth of the training identities
  is held out whole; their images form the validation query / gallery (2 queries per identity, from different
  cameras when the data has cameras) and are not trained on. The model is chosen on identities it never saw, which
  is what the test measures.
* `images` (closed-set, for data with few classes such as Fashion-MNIST): a seeded tenth of every class's images is
  held out; one in ten of those is a query, the rest the gallery. The classes are trained on, so this selects for
  closed-set retrieval; it is labelled as such in ``metrics.json``.

`auto` takes `identities` when the held-out tenth is at least :data:`MIN_VAL_IDENTITIES` identities (100 training
identities at the default fraction), else `images`.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import datasets
import numpy as np

from .splits import column_array, pick_queries, relabel_contiguous

__all__ = ['VAL_SPLITS', 'MIN_VAL_IDENTITIES', 'VAL_QUERIES_PER_IDENTITY', 'ValidationSplit', 'carve_validation']

VAL_SPLITS = ('auto', 'identities', 'images')
MIN_VAL_IDENTITIES = 10  # fewer held-out identities give an mAP too noisy to choose checkpoints on
VAL_QUERIES_PER_IDENTITY = 2
_IMAGES_QUERY_SHARE = 10  # images mode: one held-out image in ten is a query


@dataclass
class ValidationSplit:
    """The training split minus the held-out images, and the validation query / gallery made of them.

    Attributes:
        train: What remains to train on; labels 0..num_classes-1.
        num_classes: Classes left to train on (the classifier size).
        query: Validation queries (labels comparable with the gallery's only).
        gallery: Validation gallery.
        info: What ``metrics.json`` records under ``validation``: ``split`` ('train'), ``mode``, ``classes`` (the
            dataset's class names when it has names, else its label ids), ``num_query``, ``num_gallery``.
    """
    train: datasets.Dataset
    num_classes: int
    query: datasets.Dataset
    gallery: datasets.Dataset
    info: Dict[str, Any]


def _class_names(ds: datasets.Dataset) -> Optional[List[str]]:
    feature = ds.features.get('label')
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def carve_validation(train: datasets.Dataset, *, mode: str = 'auto', fraction: float = 0.1,
                     seed: int = 0) -> ValidationSplit:
    """Hold out part of `train` as a validation query / gallery (see the module docstring).

    Args:
        train: The training split (`image`, `label`, optional `camera`).
        mode: 'identities', 'images' or 'auto'.
        fraction: Share of the identities (or of every class's images) held out.
        seed: Seed of the choice; fixed per dataset, so that every training seed trains on the same images.

    Raises:
        ValueError: an unknown mode, a fraction outside (0, 1), or too few classes / images to hold any out.
    """
    if mode not in VAL_SPLITS:
        raise ValueError(f'val_split={mode!r}; allowed: {", ".join(VAL_SPLITS)}.')
    if not 0 < fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {fraction}.')
    labels = column_array(train, 'label')
    classes = np.unique(labels)
    cameras = column_array(train, 'camera') if 'camera' in train.column_names else None
    names = _class_names(train)
    rng = np.random.default_rng(seed)
    num_held = int(round(fraction * len(classes)))
    if mode == 'auto':
        mode = 'identities' if num_held >= MIN_VAL_IDENTITIES else 'images'
    if mode == 'identities':
        if num_held < 2 or len(classes) - num_held < 2:
            raise ValueError(
                f'val_split=identities holds out {num_held} of the {len(classes)} training identities; at least 2 '
                f'must be held out and 2 kept. Raise val_fraction, or use val_split: images for data with few classes.')
        held_classes = np.sort(rng.choice(classes, size=num_held, replace=False))
        held = np.isin(labels, held_classes)
        per_class = VAL_QUERIES_PER_IDENTITY
    else:
        held = np.zeros(len(labels), dtype=bool)
        for label in classes:
            members = np.flatnonzero(labels == label)
            take = int(round(fraction * len(members)))
            if take < 2 or len(members) - take < 1:
                raise ValueError(
                    f'val_split=images: class {label} has {len(members)} training images, too few to hold out '
                    f'{fraction:.0%} of them (2 at least, and 1 left to train on). Raise val_fraction or use more '
                    'data.')
            held[rng.choice(members, size=take, replace=False)] = True
        held_classes = classes
        per_class = max(1, int(round(held.sum() / len(classes) / _IMAGES_QUERY_SHARE)))
    pool = np.flatnonzero(held)
    is_query = np.zeros(len(pool), dtype=bool)
    is_query[pick_queries(labels[pool], per_class, cameras=None if cameras is None else cameras[pool],
                          seed=seed)] = True
    query, gallery = train.select(pool[is_query]), train.select(pool[~is_query])
    remaining, num_classes = relabel_contiguous(train.select(np.flatnonzero(~held)))
    info = dict(split='train', mode=mode,
                classes=[names[c] for c in held_classes] if names else [int(c) for c in held_classes],
                num_query=len(query), num_gallery=len(gallery))
    return ValidationSplit(train=remaining, num_classes=num_classes, query=query, gallery=gallery, info=info)
