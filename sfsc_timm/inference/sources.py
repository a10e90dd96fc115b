"""What ``sfsc-timm embed`` reads: a folder of images (recursive, no labels), a dataset saved with
``save_to_disk``, or a Hub dataset; each image with the id it is written under (its path, or the dataset's id)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import datasets
from PIL import Image

__all__ = ['ImageSource', 'FolderImages', 'DatasetImages', 'UnreadableImageError', 'open_images', 'image_extensions']


class UnreadableImageError(RuntimeError):
    """An image file found while embedding that Pillow cannot read."""


def image_extensions() -> Sequence[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


class ImageSource:
    """A sequence of images with ids: ``len``, ``ids``, ``load(i)``; ``id_column`` names the ids' column."""

    id_column: str = 'path'
    ids: Sequence[Any] = ()
    description: str = ''

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError


class FolderImages(ImageSource):
    """Every image file under ``root``, at any depth (an imagefolder's class folders included), sorted by path.

    The ids are the paths relative to ``root`` (POSIX separators), so the output does not depend on where the folder
    lies. Files and folders whose names start with '.' are skipped.
    """

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        extensions = set(image_extensions())
        files = [p for p in self.root.rglob('*') if p.suffix.lower() in extensions and p.is_file()
                 and not any(part.startswith('.') for part in p.relative_to(self.root).parts)]
        self.ids = sorted(p.relative_to(self.root).as_posix() for p in files)
        self.description = f'{len(self.ids)} images under {self.root}'

    def load(self, index: int) -> Image.Image:
        path = self.root / self.ids[index]
        try:
            with Image.open(path) as image:
                image.load()
                return image
        except (OSError, Image.DecompressionBombError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise UnreadableImageError(f'cannot read image {path} ({e}); remove or fix the file.') from None


@dataclass
class _Column:
    name: str
    values: List[Any]


class DatasetImages(ImageSource):
    """The images of a ``datasets.Dataset``, with the dataset's id.

    The id column is ``id_column`` when given, else the dataset's ``id`` column, else the images' own file paths
    (``path``; an imagefolder loaded by ``datasets`` keeps them) when they are all known and distinct, else the row
    number (``index``).
    """

    def __init__(self, ds: datasets.Dataset, image_column: Optional[str] = None, id_column: Optional[str] = None,
                 description: str = 'the dataset'):
        self.ds = ds
        self.image_column = _image_column(ds, image_column, description)
        column = _id_column(ds, self.image_column, id_column, description)
        self.id_column, self.ids = column.name, column.values
        self.description = f'{len(self.ids)} images of {description}'

    def load(self, index: int) -> Image.Image:
        image = self.ds[index][self.image_column]
        if not isinstance(image, Image.Image):
            raise ValueError(f'row {index} of column {self.image_column!r} is not an image ({type(image).__name__}).')
        return image


def _image_column(ds: datasets.Dataset, image_column: Optional[str], description: str) -> str:
    images = [name for name, feature in ds.features.items() if isinstance(feature, datasets.Image)]
    if image_column is None:
        image_column = 'image' if 'image' in images else images[0] if len(images) == 1 else None
    if image_column not in ds.column_names:
        raise ValueError(f'{description} has no image column{f" {image_column!r}" if image_column else ""}; its '
                         f'columns are {ds.column_names}. Pass --image-column NAME.')
    return image_column


def _id_column(ds: datasets.Dataset, image_column: str, id_column: Optional[str], description: str) -> _Column:
    if id_column is not None:
        if id_column not in ds.column_names:
            raise ValueError(f'{description} has no column {id_column!r}; its columns are {ds.column_names}.')
        return _Column(id_column, ds[id_column])
    if 'id' in ds.column_names:
        return _Column('id', ds['id'])
    paths = _image_paths(ds, image_column)
    if paths and all(paths) and len(set(paths)) == len(paths):
        return _Column('path', paths)
    return _Column('index', list(range(len(ds))))


def _image_paths(ds: datasets.Dataset, image_column: str) -> List[Optional[str]]:
    """The file path stored with each image (None where there is none), read in Arrow batches without the bytes."""
    if not isinstance(ds.features[image_column], datasets.Image):
        return []
    raw = ds.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    paths: List[Optional[str]] = []
    for batch in raw.with_format('arrow').iter(batch_size=4096):
        paths.extend(batch.column(image_column).combine_chunks().field('path').to_pylist())
    return paths


def open_images(source: Union[str, Path], *, split: Optional[str] = None, image_column: Optional[str] = None,
                id_column: Optional[str] = None) -> ImageSource:
    """The images ``source`` names.

    Args:
        source: a local folder of images (searched recursively), a dataset folder written by ``save_to_disk``, or a
            Hub dataset id (``ORG/NAME``, also ``hf-hub:ORG/NAME``; read with ``datasets.load_dataset``).
        split: the dataset split (default: ``train``, or the only split); unused for a folder of images.
        image_column, id_column: the dataset columns holding the images and the ids (default: found).

    Raises:
        FileNotFoundError: a local path that does not exist, or a folder with no image in it.
        ValueError: a dataset without an image column, or a split it does not have.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        if (path / 'dataset_info.json').is_file() or (path / 'dataset_dict.json').is_file():
            return _from_dataset(datasets.load_from_disk(str(path)), split, image_column, id_column, str(path))
        images = FolderImages(path)
        if not len(images):
            raise FileNotFoundError(f'{path} holds no image files ({", ".join(image_extensions()[:8])}, ...).')
        return images
    if path.exists():
        raise ValueError(f'{path} is a file; pass a folder of images or a dataset.')
    name = text.removeprefix('hf-hub:')
    if text.startswith(('.', '/', '~')) or name.count('/') != 1:
        raise FileNotFoundError(f'{text} does not exist. Pass a folder of images, a dataset saved with '
                                'save_to_disk, or a Hub dataset id ORG/NAME.')
    return _from_dataset(datasets.load_dataset(name, split=split), split, image_column, id_column, name)


def _from_dataset(ds: Union[datasets.Dataset, datasets.DatasetDict], split: Optional[str], image_column, id_column,
                  description: str) -> DatasetImages:
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = 'train' if 'train' in ds else next(iter(ds)) if len(ds) == 1 else None
        if split not in ds:
            raise ValueError(f'{description} has the splits {list(ds)}; pass --split with one of them.')
        ds = ds[split]
    return DatasetImages(ds, image_column=image_column, id_column=id_column,
                         description=f'{description}' + (f' ({split})' if split else ''))
