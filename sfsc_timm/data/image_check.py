""" Check that every image file of a dataset can be opened, before hours of training depend on it.

Cheap on purpose: PIL reads only each file's header (format and size), not the pixels, so a Market-1501-sized
dataset is checked in seconds. Images stored in the dataset itself (bytes) were decoded when it was built and are
not re-checked.
"""
from typing import Iterable, List, Tuple

import datasets
from PIL import Image, UnidentifiedImageError

from ..errors import UsageError

__all__ = ['unreadable_images', 'check_images']

SHOWN = 5


def unreadable_images(ds: datasets.Dataset) -> List[Tuple[str, str]]:
    """``(path, reason)`` of every image file of ``ds`` whose header PIL cannot read."""
    if 'image' not in ds.column_names or not isinstance(ds.features['image'], datasets.Image):
        return []
    files = ds.with_format('arrow', columns=['image'])[:]['image'].combine_chunks()  # structs: bytes, path
    bad = []
    for path, stored in zip(files.field('path').to_pylist(), files.field('bytes').is_valid().to_pylist()):
        if stored or path is None:  # bytes inside the dataset (decoded when it was built), or no file
            continue
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018  (the header is parsed lazily)
        except FileNotFoundError:
            bad.append((path, 'missing'))
        except UnidentifiedImageError:
            bad.append((path, 'not an image PIL can read'))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # a bomb: over PIL's pixel limit
            bad.append((path, str(e) or type(e).__name__))
    return bad


def check_images(splits: Iterable[Tuple[str, datasets.Dataset]], where: str) -> None:
    """Raise one :class:`~sfsc_timm.errors.UsageError` naming the unreadable image files of all ``splits``.

    Args:
        splits: ``(split name, dataset)`` pairs.
        where: the dataset, for the message.
    """
    bad = [(name, path, reason) for name, ds in splits for path, reason in unreadable_images(ds)]
    if not bad:
        return
    shown = '; '.join(f'{path} ({name}: {reason})' for name, path, reason in bad[:SHOWN])
    more = f' and {len(bad) - SHOWN} more' if len(bad) > SHOWN else ''
    raise UsageError(f'{where}: {len(bad)} image file(s) cannot be read: {shown}{more}. Replace or remove them, then '
                     'run again.')
