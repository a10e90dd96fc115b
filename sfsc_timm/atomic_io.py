"""Every file and folder sfsc-timm writes goes through here (docs/design.md, "Files on disk").

A file or folder is built beside its target under a temporary name, then swapped in with one rename, so readers
(and a kill at any moment) see either the old version or the whole new one, never a mix and never nothing. What is
written gets the permissions the user's umask gives a new file (0644 / 0755 under umask 022): ``tempfile`` and
safetensors would make it private. Temporary names carry the writer's process id, so what a killed writer left
behind is recognised and removed by the next write beside it.
"""
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, List, Optional, Union

__all__ = [
    'TEMP_MARK', 'RETIRED_MARK', 'default_mode', 'give_default_permissions', 'temp_path_for',
    'remove_stale_temporaries',
    'write_file_atomically', 'write_bytes_atomically', 'write_text_atomically', 'write_json_atomically',
    'staged_folder', 'replace_folder', 'DestinationInUse', 'check_destination',
]

PathLike = Union[str, Path]

# '.<target name>.sfsc-tmp.<pid>.<random>': the pid tells a live writer's temporary from a killed one's;
# '.sfsc-old.' marks a replaced folder set aside where the file system cannot exchange two paths in one step
TEMP_MARK = '.sfsc-tmp.'
RETIRED_MARK = '.sfsc-old.'
_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically


def default_mode(is_dir: bool) -> int:
    """The mode a new folder / file gets under the current umask (0755 / 0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if is_dir else 0o666) & ~mask


def give_default_permissions(path: PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions the umask gives new files."""
    path = Path(path)
    file_mode, dir_mode = default_mode(False), default_mode(True)
    if not path.is_dir() or path.is_symlink():
        os.chmod(path, file_mode)
        return
    for root, dirs, files in os.walk(path):
        os.chmod(root, dir_mode)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, file_mode)


class DestinationInUse(ValueError):
    """A writer's destination holds something it did not write itself: replacing it would lose the user's files."""


def check_destination(target: PathLike, own_files: Collection[str] = (), *, folder: bool, force: bool = False,
                      fix: str = 'choose another output', own_file: Optional[Callable[[Path], bool]] = None,
                      own_kind: str = 'a file this writer writes') -> None:
    """Refuse to replace ``target`` unless it is absent or holds only what this writer writes (docs/design.md,
    "Files on disk": nothing of the user's is ever replaced).

    Args:
        target: The file or folder about to be written.
        own_files: The names a folder writer writes (its whole file set); any other entry is the user's.
        folder: Whether the writer writes a folder (else one file).
        force: Replace whatever is there (the user asked for it).
        fix: What the user can do instead, for the message (e.g. ``'pass --force or another --output'``).
        own_file: For a file writer, whether an existing file is one it wrote (its format and its own marker, read
            without executing anything); None: any file at the path named is replaced.
        own_kind: What `own_file` recognises, for the message (e.g. ``'an ONNX model export-width wrote'``).

    Raises:
        DestinationInUse: naming the path and what is in the way.
    """
    target = Path(target)
    if force or not (target.exists() or target.is_symlink()):
        return
    if folder and not target.is_dir():
        raise DestinationInUse(f'{target} is a file; writing a folder there would replace it: {fix}.')
    if not folder:
        if target.is_dir():
            raise DestinationInUse(f'{target} is a folder; writing a file there would replace it and everything in '
                                   f'it: {fix}.')
        if own_file is not None and not own_file(target):
            raise DestinationInUse(f'{target} is not {own_kind}; writing there would replace it: {fix}.')
        return
    own = set(own_files)
    # a killed writer's temporaries are ours too (removed by the next write)
    foreign = sorted(p.name for p in target.iterdir() if p.name not in own and TEMP_MARK not in p.name)
    if foreign:
        shown = ', '.join(foreign[:5]) + (f' (+{len(foreign) - 5} more)' if len(foreign) > 5 else '')
        raise DestinationInUse(f'{target} holds files this writer does not write ({shown}); writing there would '
                               f'replace the whole folder: {fix}.')


def temp_path_for(target: PathLike, mark: str = TEMP_MARK, suffix: str = '') -> Path:
    """A fresh temporary name beside ``target`` that :func:`remove_stale_temporaries` recognises; ``suffix`` for
    writers that choose the format by the file name (``.onnx``, ``.pt2``)."""
    target = Path(target)
    return target.parent / f'.{target.name}{mark}{os.getpid()}.{secrets.token_hex(4)}{suffix}'


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


_TEMP_NAME = re.compile(r'^\.(?P<target>.+)(?P<mark>\.sfsc-(?:tmp|old)\.)(?P<pid>\d+)\.[0-9a-f]{8}(?:\.\w+)?$')


def remove_stale_temporaries(folder: PathLike, name: Optional[str] = None) -> List[Path]:
    """Clean up after killed writers in ``folder`` (only around the target ``name`` when given).

    A folder set aside by an interrupted replacement whose target is missing goes back in place; every other
    temporary of a process that no longer runs is removed.

    Returns:
        The paths removed or put back.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cleaned = []
    for path in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(path.name)
        if match is None or (name is not None and match['target'] != name) or _pid_alive(int(match['pid'])):
            continue
        target = folder / match['target']
        if match['mark'] == RETIRED_MARK and not os.path.lexists(target):
            os.rename(path, target)  # a kill between the two renames of the fallback: the old folder is whole
        else:
            _remove(path)
        cleaned.append(path)
    return cleaned


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def write_file_atomically(path: PathLike, write: Callable[[Path], Any], suffix: str = '') -> Path:
    """Replace the file ``path`` with what ``write(temp_path)`` writes (the folder is created if needed).

    ``write`` may be any writer that takes a path (``torch.save``, an ONNX exporter, ``savefig``...); if it raises,
    ``path`` is untouched. ``suffix`` ends the temporary name, for writers that read the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    temp = temp_path_for(path, suffix=suffix)
    try:
        try:
            write(temp)
        except OSError as e:
            if e.filename is None and e.errno is not None:  # name the file the user asked for, not the temporary
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        give_default_permissions(temp)
        os.replace(temp, path)
    finally:
        _remove(temp)
    return path


def write_bytes_atomically(path: PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data``."""
    return write_file_atomically(path, lambda temp: temp.write_bytes(data))


def write_text_atomically(path: PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8)."""
    return write_file_atomically(path, lambda temp: temp.write_text(text, encoding='utf-8'))


def write_json_atomically(path: PathLike, obj: Any, default: Optional[Callable[[Any], Any]] = None) -> Path:
    """Replace ``path`` with ``obj`` as indented JSON; ``default`` converts what json cannot (as ``json.dumps``)."""
    return write_text_atomically(path, json.dumps(obj, indent=2, default=default) + '\n')


@contextmanager
def staged_folder(target: PathLike) -> Iterator[Path]:
    """Build a folder to replace ``target``: yields an empty folder beside it, swapped in when the block ends.

    If the block raises (or the process is killed), ``target`` is untouched and the half-built folder is removed
    (by the next write beside it, after a kill)::

        with staged_folder(run / 'export') as folder:
            save(net, folder)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    staging = temp_path_for(target)
    staging.mkdir()
    try:
        yield staging
        give_default_permissions(staging)
        replace_folder(staging, target)
    finally:
        _remove(staging)


@functools.lru_cache(maxsize=None)
def _renameat2() -> Optional[Callable[..., int]]:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith('linux'):
        return False
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):  # the file system cannot swap
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: PathLike, target: PathLike) -> None:
    """Put the complete folder ``new`` at ``target``; an existing ``target`` is exchanged for it in one step.

    ``target`` is at every moment either wholly old or wholly new. Where the file system cannot exchange two paths,
    the old folder is first renamed aside; a kill between the two renames leaves it there under a temporary name,
    and the next write beside ``target`` puts it back before anything else.
    """
    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        _remove(new)  # now the old folder
        return
    retired = temp_path_for(target, RETIRED_MARK)
    os.rename(target, retired)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(retired, target)  # put the good one back
        raise
    _remove(retired)
