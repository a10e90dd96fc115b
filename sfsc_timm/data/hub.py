""" Hub datasets and local image folders with a label column, as retrieval data.

Loaded with `datasets.load_dataset`: a Hub id, or the `imagefolder` builder for a local folder with one sub-folder
per split (train/ test/ validation/, or any names when one of them is query/, gallery/ or a split named in the
call), each holding one sub-folder per class or a `metadata.csv` / `metadata.jsonl` with extra columns such as an
identity or a camera. Query and gallery come from two named splits, or are carved from one split: the first
`query_per_class` items of every class are queries, the rest the gallery (the Fashion-MNIST protocol).
"""
from pathlib import Path
from typing import Any, Dict, Optional, Set

import datasets
import numpy as np

from .retrieval_data import RetrievalData
from .splits import column_array, first_per_class, relabel_contiguous

__all__ = ['standardize_columns', 'load_hub_retrieval']

_GALLERY_SPLIT_GUESSES = ('test', 'validation', 'valid', 'val')


def standardize_columns(
        ds: datasets.Dataset,
        *,
        label_column: str = 'label',
        image_column: Optional[str] = None,
        camera_column: Optional[str] = 'camera',
        where: str = 'dataset',
) -> datasets.Dataset:
    """Keep and rename the columns to the schema `image`, `label` and (when present) `camera`.

    Args:
        ds: Any dataset with an image column and a label column.
        label_column: Column holding the class / identity.
        image_column: Column holding the images; default `image`, else the only `datasets.Image` column.
        camera_column: Column holding the camera, used when present; None to ignore cameras.
        where: Description of `ds` for error messages.

    Raises:
        ValueError: The label or the image column is missing, or the labels are not integers.
    """
    columns = ds.column_names
    if label_column not in columns:
        raise ValueError(
            f'{where} has no label column {label_column!r}; its columns are {columns}. Pass '
            f'label_column=<the column holding the class or identity>.')
    if image_column is None:
        image_columns = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        image_column = 'image' if 'image' in columns else (image_columns[0] if len(image_columns) == 1 else None)
    if image_column not in columns:
        raise ValueError(
            f'{where} has no image column{f" {image_column!r}" if image_column else ""}; its columns are {columns}. '
            f'Pass image_column=<the column holding the images>.')
    label_dtype = str(getattr(ds.features[label_column], 'dtype', type(ds.features[label_column]).__name__))
    if not label_dtype.startswith(('int', 'uint')):
        raise ValueError(
            f'{where}: label column {label_column!r} holds {label_dtype}, integers are needed; encode it first, '
            f'e.g. with Dataset.class_encode_column({label_column!r}) on data holding all splits.')
    renames = {image_column: 'image', label_column: 'label'}
    if camera_column is not None and camera_column in columns:
        renames[camera_column] = 'camera'
    ds = ds.select_columns(list(renames))
    ds = ds.rename_columns({old: new for old, new in renames.items() if old != new})
    if not isinstance(ds.features['image'], datasets.Image):
        ds = ds.cast_column('image', datasets.Image())
    return ds


def _imagefolder_files(path: str, requested: Set[Optional[str]]) -> Dict[str, Any]:
    """The `load_dataset('imagefolder', ...)` arguments for the folder `path`.

    One split per top-level sub-folder when one of them is named like a requested split (e.g. query/, gallery/),
    else `data_dir` (datasets' own split naming: train/, test/, validation/).
    """
    root = Path(path).expanduser()
    if root.is_file():
        raise NotADirectoryError(f'imagefolder:{path} is a file; imagefolder: takes a folder of class sub-folders '
                                 '(or of split folders holding them)')
    if not root.is_dir():
        raise FileNotFoundError(f'image folder {path!r} does not exist')
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if requested & set(folders):
        return dict(data_files={name: str(root / name / '**') for name in folders})
    return dict(data_dir=str(root))


def _lacks_labels(ds: datasets.Dataset) -> bool:
    # the imagefolder builder labels a split by its class folders only when it has two or more of them
    return 'label' not in ds.column_names or ds.with_format('arrow', columns=['label'])[:]['label'].null_count > 0


def _has_metadata(split_dir: Path) -> bool:
    return any((split_dir / f'metadata.{ext}').is_file() for ext in ('csv', 'jsonl', 'parquet'))


def _check_class_folders(split_dir: Path, source: str, name: str) -> None:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
    if len(classes) < 2:
        found = f'only one class folder ({classes[0]}/)' if classes else 'no class folders'
        raise ValueError(f'image folder {source!r}: split {name!r} has {found}; retrieval needs at least 2 classes, '
                         f'one sub-folder of {split_dir} per class (or a metadata.csv with a label column).')


def load_hub_retrieval(
        source: str,
        *,
        imagefolder: bool = False,
        train_split: Optional[str] = None,
        query_split: Optional[str] = None,
        gallery_split: Optional[str] = None,
        query_per_class: Optional[int] = None,
        label_column: str = 'label',
        image_column: Optional[str] = None,
        camera_column: Optional[str] = 'camera',
        cache_dir: Optional[str] = None,
        need_train: bool = True,
) -> RetrievalData:
    """Load a Hub dataset (or a local `imagefolder`) as retrieval data.

    Query / gallery: `query_split` + `gallery_split` when both are given; else the `query` and `gallery` splits
    when the dataset has both; else `query_per_class` items per class carved from `gallery_split` (default: the
    first of test / validation / valid / val present).

    Args:
        source: Hub dataset id ('ORG/NAME'), or a local folder when `imagefolder` is True.
        imagefolder: Load `source` with the `imagefolder` builder.
        train_split: Training split name; default 'train'.
        query_split: Query split name.
        gallery_split: Gallery split name (or the split queries are carved from).
        query_per_class: Carve this many queries per class from the gallery split.
        label_column: Column holding the class / identity.
        image_column: Column holding the images (default `image` or the only image column).
        camera_column: Column holding the camera, used when present.
        cache_dir: `datasets` cache directory.
        need_train: False for evaluation: a dataset without the training split loads, with ``train`` None and
            ``num_classes`` 0 (a deployed model evaluated on a new camera's query and gallery).

    Returns:
        RetrievalData; train labels relabelled to 0..N-1 unless they already are.
    """
    if query_per_class is not None and query_split is not None:
        raise ValueError('pass either query_split (a split of queries) or query_per_class (carve queries), not both')
    if query_split is not None and gallery_split is None:
        raise ValueError(f'query_split={query_split!r} needs gallery_split= too')
    if imagefolder:
        requested = {'query', 'gallery', train_split, query_split, gallery_split}
        splits = datasets.load_dataset('imagefolder', **_imagefolder_files(source, requested), cache_dir=cache_dir)
    else:
        splits = datasets.load_dataset(source, cache_dir=cache_dir)

    def split(name: str) -> datasets.Dataset:
        if name not in splits:
            raise ValueError(f'{source!r} has no split {name!r}; its splits are {list(splits)}')
        split_dir = Path(source).expanduser() / name
        # with a metadata file the labels are its columns: a missing one is named by standardize_columns
        if imagefolder and label_column == 'label' and _lacks_labels(splits[name]) and not _has_metadata(split_dir):
            _check_class_folders(split_dir, source, name)
        return standardize_columns(
            splits[name], label_column=label_column, image_column=image_column, camera_column=camera_column,
            where=f'{source!r} (split {name!r})')

    train_name = train_split or 'train'
    train = split(train_name) if need_train or train_name in splits else None
    if query_split is not None:
        query, gallery = split(query_split), split(gallery_split)
    elif gallery_split is None and query_per_class is None and 'query' in splits and 'gallery' in splits:
        query, gallery = split('query'), split('gallery')
    else:
        gallery_split = gallery_split or next((s for s in _GALLERY_SPLIT_GUESSES if s in splits), None)
        if gallery_split is None or query_per_class is None:
            raise ValueError(
                f'{source!r} has the splits {list(splits)}: name the query and gallery splits (query_split=, '
                f'gallery_split=) or carve queries from one split (gallery_split=, query_per_class=N).')
        test = split(gallery_split)
        is_query = np.zeros(len(test), dtype=bool)
        is_query[first_per_class(column_array(test, 'label'), query_per_class)] = True
        query, gallery = test.select(np.flatnonzero(is_query)), test.select(np.flatnonzero(~is_query))

    train, num_classes = relabel_contiguous(train) if train is not None else (None, 0)
    name = source if not imagefolder else source.rstrip('/').rsplit('/', 1)[-1]
    return RetrievalData(train=train, query=query, gallery=gallery, num_classes=num_classes, name=name)
