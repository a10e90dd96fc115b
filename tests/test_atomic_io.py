""" The one place files are written: permissions follow the umask, a target is never half-written or missing, and
what a killed writer leaves behind is cleaned up by the next write. """
import multiprocessing
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from sfsc_timm import atomic_io
from sfsc_timm.atomic_io import (
    remove_stale_temporaries, replace_folder, staged_folder, temp_path_for, write_json_atomically,
    write_text_atomically,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _version(folder: Path) -> str:
    # a folder is whole when both of its files name the same version
    a, b = (folder / 'a.txt').read_text(), (folder / 'b.txt').read_text()
    assert a == b, f'{folder} mixes versions {a} and {b}'
    return a


def _write_version(folder: Path, version: str) -> None:
    (folder / 'a.txt').write_text(version)
    (folder / 'b.txt').write_text(version)


def test_files_and_folders_follow_the_umask(tmp_path, umask_022):
    write_text_atomically(tmp_path / 'notes.txt', 'hello')
    write_json_atomically(tmp_path / 'sub' / 'metrics.json', {'a': 1})
    with staged_folder(tmp_path / 'export') as folder:
        _write_version(folder, 'v1')
        (folder / 'nested').mkdir(mode=0o700)
        (folder / 'nested' / 'private.bin').write_bytes(b'x')
        os.chmod(folder / 'nested' / 'private.bin', 0o600)  # as safetensors writes its files
    assert _mode(tmp_path / 'notes.txt') == _mode(tmp_path / 'sub' / 'metrics.json') == 0o644
    assert _mode(tmp_path / 'export') == _mode(tmp_path / 'export' / 'nested') == 0o755
    assert _mode(tmp_path / 'export' / 'a.txt') == _mode(tmp_path / 'export' / 'nested' / 'private.bin') == 0o644
    os.umask(0o027)
    write_text_atomically(tmp_path / 'group.txt', 'hello')
    assert _mode(tmp_path / 'group.txt') == 0o640


def test_sfsc_save_follows_the_umask(tmp_path, small_net, umask_022):
    import sfsc_timm
    folder = sfsc_timm.save(small_net, tmp_path / 'ckpt')
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {'model.safetensors': 0o644, 'config.json': 0o644}


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path):
    write_text_atomically(tmp_path / 'f.txt', 'old')

    def fail(temp: Path) -> None:
        temp.write_text('half')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError):
        atomic_io.write_file_atomically(tmp_path / 'f.txt', fail)
    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / 'folder') as folder:
            _write_version(folder, 'v1')
            raise RuntimeError('killed')
    assert (tmp_path / 'f.txt').read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.txt']


def test_replace_folder_swaps_whole_folders(tmp_path):
    target = tmp_path / 'target'
    for version in ('v1', 'v2', 'v3'):
        with staged_folder(target) as folder:
            _write_version(folder, version)
        assert _version(target) == version
    file_target = tmp_path / 'was_a_file'
    file_target.write_text('x')
    new = tmp_path / 'new'
    new.mkdir()
    _write_version(new, 'v1')
    replace_folder(new, file_target)
    assert _version(file_target) == 'v1' and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['target', 'was_a_file']


def _kill_inside(target: str, stage: str, ready) -> None:
    """Child: replace `target` and stop for good at `stage`, to be killed there."""
    def hang(*args, **kwargs):
        ready.set()
        time.sleep(600)

    if stage == 'building':
        with staged_folder(target) as folder:
            _write_version(folder, 'new')
            (folder / 'a.txt').write_text('half')
            hang()
    elif stage == 'after_exchange':
        atomic_io._remove = hang  # the old folder is about to be deleted
        with staged_folder(target) as folder:
            _write_version(folder, 'new')
    elif stage == 'between_renames':  # a file system that cannot exchange two paths
        atomic_io._exchange = lambda a, b: False
        original = os.rename

        def rename(source, destination):
            if atomic_io.RETIRED_MARK in str(destination):
                original(source, destination)
                hang()
            original(source, destination)
        os.rename = rename
        with staged_folder(target) as folder:
            _write_version(folder, 'new')


@pytest.mark.parametrize('stage, after_kill', [
    ('building', 'old'), ('after_exchange', 'new'), ('between_renames', None),
])
def test_a_kill_leaves_a_whole_target_and_the_next_write_cleans_up(tmp_path, stage, after_kill):
    target = tmp_path / 'target'
    with staged_folder(target) as folder:
        _write_version(folder, 'old')
    context = multiprocessing.get_context('fork')
    ready = context.Event()
    child = context.Process(target=_kill_inside, args=(str(target), stage, ready))
    child.start()
    assert ready.wait(60)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    leftovers = [p for p in tmp_path.iterdir() if p.name != 'target']
    assert leftovers and all(str(child.pid) in p.name for p in leftovers)
    if after_kill is not None:
        assert _version(target) == after_kill
    else:
        # the fallback's one gap: the old folder waits beside the target, and the next write puts it back first
        assert not target.exists()
        remove_stale_temporaries(tmp_path, 'target')
        assert _version(target) == 'old'
    with staged_folder(target) as folder:
        _write_version(folder, 'next')
    assert _version(target) == 'next'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['target']


def test_live_writers_temporaries_are_left_alone(tmp_path):
    mine = temp_path_for(tmp_path / 'target')
    mine.mkdir()
    assert remove_stale_temporaries(tmp_path) == [] and mine.exists()
