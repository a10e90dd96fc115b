""" Person re-identification folders (Market-1501 and look-alikes, MSMT17).

Layouts that work (the folder given, or its only sub-folder holding one of them):

* Market-1501 layout: `bounding_box_train/`, `query/`, `bounding_box_test/` with image names starting
  `PPPP_cC` (identity, camera), e.g. `0002_c1s1_000451_03.jpg`. Market-1501, DukeMTMC-reID
  (`0001_c2_f0046182.jpg`), CUHK03-NP (`detected/` or `labeled/` sub-folder: name it) and MSMT17 converted to
  this layout (cameras may have two digits) all use it.
* MSMT17 list layout (MSMT17_V1 / V2 as distributed): `list_train.txt`, `list_val.txt` (optional, merged into
  train as usual), `list_query.txt`, `list_gallery.txt`, with images under `train/` + `test/` (V1) or
  `mask_train_v2/` + `mask_test_v2/` (V2). Each list line is `RELATIVE/PATH.jpg LABEL`; the camera is the third
  `_`-separated field of the file name.

Standard protocol: junk images (identity -1) are dropped everywhere; distractors (identity 0) are dropped from
train and kept in query / gallery; train identities are relabelled 0..N-1; cameras are 0-based.
"""
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import datasets
import numpy as np

from .retrieval_data import RetrievalData
from .splits import contiguous_labels

__all__ = ['MARKET_FOLDERS', 'MSMT_LISTS', 'find_reid_layout', 'load_reid_folder']

MARKET_FOLDERS = ('bounding_box_train', 'query', 'bounding_box_test')
MSMT_LISTS = ('list_train.txt', 'list_query.txt', 'list_gallery.txt')
_MSMT_IMAGE_DIRS = (('train', 'test'), ('mask_train_v2', 'mask_test_v2'))
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
_NAME_RE = re.compile(r'^([-\d]+)_c(\d+)')
_LAYOUT_HELP = (
    'Expected the Market-1501 layout (bounding_box_train/, query/, bounding_box_test/ holding images named '
    'PPPP_cC..., e.g. 0002_c1s1_000451_03.jpg; also DukeMTMC-reID, CUHK03-NP, MSMT17 in that layout) or the MSMT17 '
    'list layout (list_train.txt, list_query.txt, list_gallery.txt, optional list_val.txt, images in train/ + test/ '
    'or mask_train_v2/ + mask_test_v2/). For one folder per class use source="imagefolder:PATH".'
)

Records = Tuple[List[str], List[int], List[int]]  # image paths, identities, cameras


def _layout_of(path: Path) -> Optional[str]:
    if any((path / d).is_dir() for d in MARKET_FOLDERS):
        return 'market'
    if any((path / f).is_file() for f in MSMT_LISTS):
        return 'msmt'
    return None


def find_reid_layout(path: Union[str, Path]) -> Tuple[str, Path]:
    """Find the re-ID layout in `path` or in its only sub-folder that has one.

    Returns:
        ('market' or 'msmt', the folder holding the layout).

    Raises:
        FileNotFoundError: `path` is not a directory, or holds no (or more than one) layout.
    """
    path = Path(path).expanduser()
    if path.is_file():
        raise NotADirectoryError(f're-ID dataset folder {str(path)!r} is a file. {_LAYOUT_HELP}')
    if not path.is_dir():
        raise FileNotFoundError(f're-ID dataset folder {str(path)!r} does not exist. {_LAYOUT_HELP}')
    layout = _layout_of(path)
    if layout is not None:
        return layout, path
    found = [(lay, sub) for sub in sorted(p for p in path.iterdir() if p.is_dir()) if (lay := _layout_of(sub))]
    if len(found) == 1:
        return found[0]
    if found:
        names = ', '.join(sub.name for _, sub in found)
        raise FileNotFoundError(f'{str(path)!r} holds several re-ID datasets ({names}); pass one of them.')
    raise FileNotFoundError(f'{str(path)!r} is not a re-ID dataset folder. {_LAYOUT_HELP}')


def _parse_market_dir(folder: Path) -> Records:
    paths, ids, cams = [], [], []
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        match = _NAME_RE.match(file.name)
        if match is None:
            raise ValueError(f'{file} does not follow the PPPP_cC... naming of Market-1501-style folders')
        identity, camera = int(match.group(1)), int(match.group(2))
        if identity == -1:  # junk
            continue
        paths.append(str(file))
        ids.append(identity)
        cams.append(camera - 1)
    return paths, ids, cams


def _load_market(root: Path) -> Dict[str, Records]:
    missing = [d for d in MARKET_FOLDERS if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f'{str(root)!r} lacks the folder(s) {", ".join(missing)}. A Market-1501-style dataset needs '
            f'{", ".join(d + "/" for d in MARKET_FOLDERS)} side by side.')
    return {split: _parse_market_dir(root / d) for split, d in zip(('train', 'query', 'gallery'), MARKET_FOLDERS)}


def _parse_msmt_list(list_file: Path, image_dir: Path) -> Records:
    paths, ids, cams = [], [], []
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        rel, identity = line.split()
        paths.append(str(image_dir / rel))
        ids.append(int(identity))
        cams.append(int(Path(rel).name.split('_')[2]) - 1)
    return paths, ids, cams


def _load_msmt(root: Path) -> Dict[str, Records]:
    missing = [f for f in MSMT_LISTS if not (root / f).is_file()]
    dirs = next(((root / tr, root / te) for tr, te in _MSMT_IMAGE_DIRS if (root / tr).is_dir()), None)
    if missing or dirs is None:
        what = missing + ([] if dirs is not None else ['train/ (or mask_train_v2/)'])
        raise FileNotFoundError(
            f'{str(root)!r} lacks {", ".join(what)}. An MSMT17 list-layout dataset needs '
            f'{", ".join(MSMT_LISTS)} (plus optional list_val.txt) and its image folders.')
    train_dir, test_dir = dirs
    train = _parse_msmt_list(root / 'list_train.txt', train_dir)
    if (root / 'list_val.txt').is_file():
        val = _parse_msmt_list(root / 'list_val.txt', train_dir)
        train = tuple(a + b for a, b in zip(train, val))
    return {
        'train': train,
        'query': _parse_msmt_list(root / 'list_query.txt', test_dir),
        'gallery': _parse_msmt_list(root / 'list_gallery.txt', test_dir),
    }


def _to_dataset(paths: List[str], ids, cams) -> datasets.Dataset:
    features = datasets.Features(
        image=datasets.Image(), label=datasets.Value('int64'), camera=datasets.Value('int64'))
    return datasets.Dataset.from_dict(
        {'image': paths, 'label': np.asarray(ids, dtype=np.int64), 'camera': np.asarray(cams, dtype=np.int64)},
        features=features,
    )


def load_reid_folder(path: Union[str, Path], *, name: Optional[str] = None) -> RetrievalData:
    """Load a re-ID dataset folder (Market-1501 layout or MSMT17 list layout) as retrieval data.

    Args:
        path: The dataset folder (or a folder whose only sub-folder is one).
        name: Name recorded in the result; default the folder's name.

    Returns:
        RetrievalData with `image` (lazily decoded files), `label` (identity; train relabelled 0..N-1) and
        `camera` (0-based) columns.
    """
    layout, root = find_reid_layout(path)
    records = _load_market(root) if layout == 'market' else _load_msmt(root)
    paths, ids, cams = records['train']
    keep = [i for i, identity in enumerate(ids) if identity > 0] if layout == 'market' else range(len(ids))
    train_ids, num_classes = contiguous_labels([ids[i] for i in keep])
    if num_classes == 0:
        raise ValueError(f'{str(root)!r} has no training images with a valid identity')
    train = _to_dataset([paths[i] for i in keep], train_ids, [cams[i] for i in keep])
    query, gallery = (_to_dataset(*records[s]) for s in ('query', 'gallery'))
    return RetrievalData(train=train, query=query, gallery=gallery, num_classes=num_classes, name=name or root.name)
