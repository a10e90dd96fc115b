"""The index folder on disk, written whole or not at all (docs/design.md, "Files on disk"):

``INDEX/index.json``
    what the index is: the model it came from (name, architecture, checkpoint identity, embed_dim, widths), the
    item count, the next item id, the kind and its parameters, the IVF training sample, faiss's version, and a
    generation number that every change increments.
``INDEX/index.faiss``
    the faiss index (``faiss.write_index``), holding the vectors under their item ids.
``INDEX/items.parquet``
    ``item_id`` (int64, stable: never reused or renumbered) and the gallery's own id column (paths or dataset ids).

A new folder is built beside the target and exchanged for it in one step (``atomic_io.staged_folder``), so a kill
at any moment leaves the previous index whole. Nothing here is pickled.
"""
import errno
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic_io import check_destination, staged_folder
from ..errors import RunError, UsageError

__all__ = ['META_FILE', 'INDEX_FILE', 'ITEMS_FILE', 'OWN_FILES', 'FORMAT', 'FORMAT_VERSION', 'IndexFolderError',
           'check_index_destination', 'write_index_folder', 'read_index_folder', 'read_meta', 'exclusive']

META_FILE, INDEX_FILE, ITEMS_FILE = 'index.json', 'index.faiss', 'items.parquet'
OWN_FILES = (META_FILE, INDEX_FILE, ITEMS_FILE)
FORMAT, FORMAT_VERSION = 'sfsc-gallery-index', 1
ITEM_ID = 'item_id'


class IndexFolderError(UsageError):
    """A path that is not a readable index folder; the message names it and the fix."""


def check_index_destination(target: Union[str, Path], force: bool = False) -> None:
    """Refuse to replace a folder holding anything but an index (the user's files), or a file, unless ``force``."""
    check_destination(target, OWN_FILES, folder=True, force=force,
                      fix='pass --force to replace it, or another --output')


def write_index_folder(target: Union[str, Path], index: Any, items: pa.Table, meta: Dict[str, Any], faiss) -> None:
    """Write (or replace) the index folder ``target`` in one step."""
    target = Path(target)
    with staged_folder(target) as staging:
        try:
            faiss.write_index(index, str(staging / INDEX_FILE))
        except RuntimeError as e:  # faiss reports a failed write as a C++ exception, without errno
            raise RunError(f'cannot write {target / INDEX_FILE}: {str(e).strip().splitlines()[-1]}; check the free '
                           'space and permissions there; the previous index (if any) is untouched.') from None
        pq.write_table(items, staging / ITEMS_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + '\n', encoding='utf-8')


def _not_an_index(folder: Path, why: str) -> IndexFolderError:
    return IndexFolderError(f'{folder} {why}; build one with sfsc-timm index build EMBEDDINGS.parquet --output '
                            f'{folder}.')


def read_meta(folder: Union[str, Path]) -> Dict[str, Any]:
    """index.json of the index folder ``folder``, checked.

    Raises:
        FileNotFoundError: no such folder.
        IndexFolderError: not an index folder, a damaged one, or one written by a newer format.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f'index {folder} does not exist; build one with sfsc-timm index build '
                                f'EMBEDDINGS.parquet --output {folder}.')
    if not folder.is_dir():
        raise _not_an_index(folder, 'is a file, not an index folder')
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise _not_an_index(folder, f'is not an index folder (no {META_FILE})') from None
    except ValueError:
        raise _not_an_index(folder, f'is damaged ({META_FILE} is not JSON)') from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise _not_an_index(folder, f'is not an index folder ({META_FILE} is not an sfsc gallery index)')
    if int(meta.get('format_version', 0)) > FORMAT_VERSION:
        raise IndexFolderError(f'{folder} was written by a newer sfsc-timm (index format {meta["format_version"]}, '
                               f'this one reads {FORMAT_VERSION}); upgrade sfsc-timm.')
    return meta


def read_index_folder(folder: Union[str, Path], faiss) -> Tuple[Dict[str, Any], pa.Table, Any]:
    """``(meta, items, faiss index)`` of an index folder, checked for consistency."""
    folder = Path(folder)
    meta = read_meta(folder)
    for name in (INDEX_FILE, ITEMS_FILE):
        if not (folder / name).is_file():
            raise _not_an_index(folder, f'is damaged ({name} is missing)')
    try:
        items = pq.read_table(folder / ITEMS_FILE)
    except (pa.ArrowInvalid, OSError):
        raise _not_an_index(folder, f'is damaged ({ITEMS_FILE} cannot be read)') from None
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
    except RuntimeError:
        raise _not_an_index(folder, f'is damaged ({INDEX_FILE} cannot be read by faiss {faiss.__version__})') from None
    if not (index.ntotal == items.num_rows == meta.get('count')) or ITEM_ID not in items.column_names:
        raise _not_an_index(folder, f'is damaged ({INDEX_FILE} holds {index.ntotal} vectors, {ITEMS_FILE} '
                                    f'{items.num_rows} items, {META_FILE} says {meta.get("count")})')
    return meta, items, index


@contextmanager
def exclusive(folder: Union[str, Path]) -> Iterator[None]:
    """Hold the index folder against other writers (an advisory lock, released however the holder dies).

    The folder is replaced by every write, so the lock is taken on the folder open at the path and checked to still
    be the one there; a writer that finds the folder held refuses instead of waiting.

    Raises:
        RunError: another process is changing the index.
    """
    folder = Path(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunError(f'{folder} is being changed by another process (sfsc-timm index add / remove); run again '
                           'when it has finished.') from None
        if os.stat(folder).st_ino != os.fstat(fd).st_ino:  # replaced between open and lock: changed meanwhile
            raise RunError(f'{folder} was changed by another process meanwhile; run again.')
        yield
    finally:
        os.close(fd)
