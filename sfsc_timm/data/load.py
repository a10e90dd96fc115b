""" One entry point for retrieval data: `load_retrieval_data(source, ...)`.

Sources:

* `'fashion_mnist'` (default): Fashion-MNIST from the local IDX files, else the Hub (see `fashion_mnist.py`).
  Closed-set: query and gallery hold the classes trained on.
* `'fashion_mnist_open'`: its open split: train on classes 0-4 (T-shirt, trouser, pullover, dress, coat), retrieve
  among classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) of the test split.
* `'glyphs'`: glyph re-identification, the Market-1501-shaped open-set benchmark rendered from Debian's CJK fonts
  (see `glyphs.py`).
* a path to a re-ID folder, or `'reid:PATH'`: Market-1501 layout (also DukeMTMC-reID, CUHK03-NP, MSMT17 converted)
  or the MSMT17 list layout (see `reid_folders.py`).
* `'imagefolder:PATH'`: a local folder read by the `datasets` imagefolder builder (see `hub.py`).
* anything else: a Hub dataset id (`'ORG/NAME'`), loaded with `datasets.load_dataset`.
"""
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .fashion_mnist import FASHION_MNIST_OPEN_TRAIN_CLASSES, load_fashion_mnist
from .glyphs import load_glyphs
from .hub import load_hub_retrieval
from .reid_folders import load_reid_folder
from .retrieval_data import RetrievalData
from .splits import balanced_subset, column_array, relabel_contiguous

__all__ = ['load_retrieval_data', 'subset_retrieval_data', 'open_set_split', 'BUILT_IN_SOURCES']

_FASHION_MNIST_NAMES = ('fashion_mnist', 'fashion-mnist', 'fashionmnist')
_FASHION_MNIST_OPEN_NAMES = ('fashion_mnist_open', 'fashion-mnist-open')
BUILT_IN_SOURCES = ('fashion_mnist', 'fashion_mnist_open', 'glyphs')


def open_set_split(data: RetrievalData, train_classes: Sequence[int], name: Optional[str] = None) -> RetrievalData:
    """Train on `train_classes` only and retrieve among the other classes: an open split of closed-set data.

    Query and gallery keep their labels (and class names); train is relabelled 0..len(train_classes)-1.
    """
    train_classes = np.asarray(sorted(set(int(c) for c in train_classes)))
    train = data.train.select(np.flatnonzero(np.isin(column_array(data.train, 'label'), train_classes)))
    query = data.query.select(np.flatnonzero(~np.isin(column_array(data.query, 'label'), train_classes)))
    gallery = data.gallery.select(np.flatnonzero(~np.isin(column_array(data.gallery, 'label'), train_classes)))
    train, num_classes = relabel_contiguous(train)
    return RetrievalData(train=train, query=query, gallery=gallery, num_classes=num_classes,
                         name=name or f'{data.name}_open')


def subset_retrieval_data(
        data: RetrievalData,
        *,
        max_train: Optional[int] = None,
        max_query: Optional[int] = None,
        max_gallery: Optional[int] = None,
        seed: int = 0,
) -> RetrievalData:
    """Deterministic class-balanced subsets of the splits (for tests and quick runs).

    Query and gallery keep the first items of every class round-robin (every class is kept when the size allows;
    the gallery serves the query's classes first, so queries keep their matches). Train takes a seeded random,
    class-balanced choice and is relabelled to 0..N-1 if some classes drop out.
    """
    train, query, gallery, num_classes = data.train, data.query, data.gallery, data.num_classes
    if max_train is not None and train is not None:
        train = train.select(balanced_subset(column_array(train, 'label'), max_train, seed=seed))
        train, num_classes = relabel_contiguous(train)
    if max_query is not None:
        query = query.select(balanced_subset(column_array(query, 'label'), max_query))
    if max_gallery is not None:
        query_classes = np.unique(column_array(query, 'label'))
        gallery = gallery.select(
            balanced_subset(column_array(gallery, 'label'), max_gallery, priority_classes=query_classes))
    return RetrievalData(train=train, query=query, gallery=gallery, num_classes=num_classes, name=data.name)


def _looks_like_path(source: str) -> bool:
    return source.startswith(('/', './', '../', '~')) or Path(source).expanduser().exists()


def load_retrieval_data(
        source: str = 'fashion_mnist',
        *,
        root: Optional[Union[str, Path]] = None,
        train_split: Optional[str] = None,
        query_split: Optional[str] = None,
        gallery_split: Optional[str] = None,
        query_per_class: Optional[int] = None,
        label_column: str = 'label',
        image_column: Optional[str] = None,
        camera_column: Optional[str] = 'camera',
        cache_dir: Optional[str] = None,
        max_train: Optional[int] = None,
        max_query: Optional[int] = None,
        max_gallery: Optional[int] = None,
        seed: int = 0,
        need_train: bool = True,
) -> RetrievalData:
    """Load train / query / gallery splits as `datasets.Dataset`s with `image`, `label` and optional `camera`.

    Args:
        source: 'fashion_mnist', 'fashion_mnist_open', 'glyphs', a re-ID folder path (or 'reid:PATH'),
            'imagefolder:PATH' or a Hub dataset id.
        root: Fashion-MNIST: directory of the IDX files (default $SFSC_FASHION_MNIST_DIR, else
            /usr/share/datasets/fashion-mnist); glyphs: the cache directory of the rendered dataset.
        train_split: Hub / imagefolder: training split (default 'train').
        query_split: Hub / imagefolder: query split (needs gallery_split).
        gallery_split: Hub / imagefolder: gallery split, or the split queries are carved from.
        query_per_class: Carve the first N items per class of the gallery split as queries (Fashion-MNIST: 100).
        label_column: Hub / imagefolder: column holding the class / identity.
        image_column: Hub / imagefolder: column holding the images (default `image` or the only image column).
        camera_column: Hub / imagefolder: column holding the camera, used when present.
        cache_dir: `datasets` cache directory for Hub / imagefolder loads (default: the `datasets` default).
        max_train: Keep at most this many training items (seeded, class-balanced).
        max_query: Keep at most this many queries (first items of each class, round-robin).
        max_gallery: Keep at most this many gallery items (first items of each class, query classes first).
        seed: Seed of the training subset.
        need_train: False for evaluation, which reads only the query and gallery: a Hub / imagefolder source
            without a training split loads (``train`` None, ``num_classes`` 0).

    Returns:
        RetrievalData(train, query, gallery, num_classes, name); train labels are 0..num_classes-1.
    """
    kind, target = 'hub', source
    if source.lower() in _FASHION_MNIST_NAMES:
        kind = 'fashion_mnist'
    elif source.lower() in _FASHION_MNIST_OPEN_NAMES:
        kind = 'fashion_mnist_open'
    elif source.lower() == 'glyphs':
        kind = 'glyphs'
    elif source.startswith('imagefolder:'):
        kind, target = 'imagefolder', source[len('imagefolder:'):]
    elif source.startswith('reid:'):
        kind, target = 'reid', source[len('reid:'):]
    elif _looks_like_path(source):
        kind = 'reid'

    hub_only = dict(train_split=train_split, query_split=query_split, gallery_split=gallery_split,
                    image_column=image_column)
    if label_column != 'label':
        hub_only['label_column'] = label_column
    if kind in ('fashion_mnist', 'fashion_mnist_open', 'glyphs', 'reid'):
        given = [k for k, v in hub_only.items() if v is not None]
        if kind in ('reid', 'glyphs') and query_per_class is not None:
            given.append('query_per_class')
        if given:
            raise ValueError(f'{", ".join(given)} apply to Hub / imagefolder sources, not to {source!r}')
    if root is not None and kind not in ('fashion_mnist', 'fashion_mnist_open', 'glyphs'):
        raise ValueError(f'root= is the Fashion-MNIST IDX directory or the glyph cache; pass the data location in '
                         f'source={source!r}')

    if kind in ('fashion_mnist', 'fashion_mnist_open'):
        data = load_fashion_mnist(root, query_per_class=query_per_class or 100, cache_dir=cache_dir)
        if kind == 'fashion_mnist_open':
            data = open_set_split(data, FASHION_MNIST_OPEN_TRAIN_CLASSES, name='fashion_mnist_open')
    elif kind == 'glyphs':
        data = load_glyphs(root)
    elif kind == 'reid':
        data = load_reid_folder(target)
    else:
        data = load_hub_retrieval(
            target, imagefolder=kind == 'imagefolder', train_split=train_split, query_split=query_split,
            gallery_split=gallery_split, query_per_class=query_per_class, label_column=label_column,
            image_column=image_column, camera_column=camera_column, cache_dir=cache_dir, need_train=need_train)

    if any(v is not None for v in (max_train, max_query, max_gallery)):
        data = subset_retrieval_data(
            data, max_train=max_train, max_query=max_query, max_gallery=max_gallery, seed=seed)
    empty = [s for s in ('train', 'query', 'gallery') if getattr(data, s) is not None and len(getattr(data, s)) == 0]
    if empty:
        raise ValueError(f'{source!r} gave empty split(s): {", ".join(empty)}')
    return data
