""" Fashion-MNIST, the built-in default dataset.

Read from the IDX files of the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), or
from a directory given as argument or in the env var `SFSC_FASHION_MNIST_DIR`; when the files are absent, from the
Hub (`zalando-datasets/fashion_mnist`). Retrieval protocol: train = the 60,000 training images, query = the first
100 test images of each class (1,000), gallery = the other 9,000 test images.
"""
import gzip
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import datasets
import numpy as np

from .retrieval_data import RetrievalData
from .splits import column_array, first_per_class

__all__ = [
    'FASHION_MNIST_CLASSES', 'FASHION_MNIST_OPEN_TRAIN_CLASSES',
    'FASHION_MNIST_HUB_ID', 'DEFAULT_FASHION_MNIST_DIR', 'read_idx', 'fashion_mnist_dir',
    'load_fashion_mnist',
]

FASHION_MNIST_CLASSES = (
    'T - shirt / top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
FASHION_MNIST_OPEN_TRAIN_CLASSES = (0, 1, 2, 3, 4)  # the open split trains on these, retrieves among 5-9
FASHION_MNIST_HUB_ID = 'zalando-datasets/fashion_mnist'
DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
_ENV_DIR = 'SFSC_FASHION_MNIST_DIR'
_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) into a uint8 array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], 'big')
    dtype_code, ndim = (magic >> 8) & 0xff, magic & 0xff
    if magic >> 16 != 0 or dtype_code != 0x08:
        raise ValueError(f'{path} is not an unsigned-byte IDX file (magic {magic:#010x})')
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype='>u4', count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_dir(root: Optional[Union[str, Path]] = None) -> Path:
    """The IDX directory: `root`, else $SFSC_FASHION_MNIST_DIR, else the Debian package's directory."""
    return Path(root or os.environ.get(_ENV_DIR) or DEFAULT_FASHION_MNIST_DIR).expanduser()


def _find_idx_files(root: Path) -> Tuple[Dict[str, Path], list]:
    """Map each needed file to its path (`.gz` or plain); also return the names not found."""
    found, missing = {}, []
    for key, stem in _FILES.items():
        candidates = [root / f'{stem}.gz', root / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f'{stem}.gz')
        else:
            found[key] = path
    return found, missing


def _images_to_dataset(images: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    """Wrap (N, H, W) uint8 images and labels as a Dataset with an `Image` column.

    Each image is stored as a binary PGM (Netpbm P5: a short header + the raw pixels), a lossless format PIL decodes;
    this builds 70,000 items in well under a second, where PNG encoding takes several seconds.
    """
    height, width = images.shape[1:]
    header = f'P5\n{width} {height}\n255\n'.encode()
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES)))
    return datasets.Dataset.from_dict(
        {'image': [{'bytes': header + im.tobytes(), 'path': None} for im in images], 'label': labels.astype(np.int64)},
        features=features,
    )


def _from_idx(files: Dict[str, Path], query_per_class: int) -> Tuple[datasets.Dataset, ...]:
    train_images, train_labels = read_idx(files['train_images']), read_idx(files['train_labels'])
    test_images, test_labels = read_idx(files['test_images']), read_idx(files['test_labels'])
    is_query = np.zeros(len(test_labels), dtype=bool)
    is_query[first_per_class(test_labels, query_per_class)] = True
    return (
        _images_to_dataset(train_images, train_labels),
        _images_to_dataset(test_images[is_query], test_labels[is_query]),
        _images_to_dataset(test_images[~is_query], test_labels[~is_query]),
    )


def _from_hub(cache_dir: Optional[str], query_per_class: int) -> Tuple[datasets.Dataset, ...]:
    splits = datasets.load_dataset(FASHION_MNIST_HUB_ID, cache_dir=cache_dir)
    train, test = splits['train'], splits['test']
    is_query = np.zeros(len(test), dtype=bool)
    is_query[first_per_class(column_array(test, 'label'), query_per_class)] = True
    return train, test.select(np.flatnonzero(is_query)), test.select(np.flatnonzero(~is_query))


def load_fashion_mnist(
        root: Optional[Union[str, Path]] = None,
        *,
        query_per_class: int = 100,
        cache_dir: Optional[str] = None,
) -> RetrievalData:
    """Load Fashion-MNIST as retrieval data (train 60,000 / query 1,000 / gallery 9,000).

    Args:
        root: Directory of the IDX files; default $SFSC_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist.
        query_per_class: Test images per class (the first ones) used as queries; the rest form the gallery.
        cache_dir: `datasets` cache directory for the Hub fallback.

    Returns:
        RetrievalData with `image` (28x28 grayscale) and `label` (0..9) columns, 10 classes.

    Raises:
        FileNotFoundError: Neither the IDX files nor the Hub are reachable; the message says how to get the data.
    """
    idx_dir = fashion_mnist_dir(root)
    files, missing = _find_idx_files(idx_dir)
    if not missing:
        train, query, gallery = _from_idx(files, query_per_class)
    else:
        try:
            train, query, gallery = _from_hub(cache_dir, query_per_class)
        except Exception as err:  # offline, unreachable, not cached: all end the same way for the user
            raise FileNotFoundError(
                f'Fashion-MNIST not found: {idx_dir} lacks {", ".join(missing)}, and the Hub dataset '
                f'{FASHION_MNIST_HUB_ID!r} could not be loaded ({type(err).__name__}: {err}). To get the data, either '
                f'install the Debian package (`apt-get install -y dataset-fashion-mnist`, files in '
                f'{DEFAULT_FASHION_MNIST_DIR}), point ${_ENV_DIR} or root= at a directory holding the four '
                f'*-ubyte.gz IDX files, or allow network access to the Hugging Face Hub.'
            ) from err
    return RetrievalData(train=train, query=query, gallery=gallery, num_classes=len(FASHION_MNIST_CLASSES),
                         name='fashion_mnist')
