"""A real local Hugging Face Hub mirror for download tests: olah (PyPI), serving a folder as a local git repository.

olah's ``mirrors-path`` setting serves git repositories laid out as ``MIRRORS/models/ORG/NAME`` through the Hub's own
routes (``/api/models/ORG/NAME/revision/main``, ``/ORG/NAME/resolve/REV/FILE``...), so huggingface_hub downloads from
it exactly as from huggingface.co once ``HF_ENDPOINT`` points at it. ``offline = true`` keeps olah from trying to reach
huggingface.co. The server listens on 127.0.0.1 only and runs under ``timeout`` so it stops by itself.
"""
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Tuple
from net_utils import free_port

OLAH_CONFIG = """\
[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{repos}"
mirrors-path = ["{mirrors}"]

[accessibility]
offline = true
"""


def git_repository(folder: Path, files_from: Path, lfs_suffixes: Tuple[str, ...] = ('.safetensors',)) -> str:
    """Make ``folder`` a git repository whose one commit on ``main`` holds the files of ``files_from``; its hash.

    Files ending in ``lfs_suffixes`` are stored as the Hub stores weights, with Git LFS: the commit holds a pointer
    file and the bytes go to ``.git/lfs/objects/OID[:2]/OID[2:4]/OID`` (the Git LFS spec's layout, written here
    because the git-lfs client is not installed), and ``.gitattributes`` routes them to LFS.
    """
    folder.mkdir(parents=True)
    lfs_patterns = []
    for path in sorted(files_from.iterdir()):
        if path.name.endswith(lfs_suffixes):
            data = path.read_bytes()
            oid = hashlib.sha256(data).hexdigest()
            store = folder / '.git' / 'lfs' / 'objects' / oid[:2] / oid[2:4]
            store.mkdir(parents=True, exist_ok=True)
            (store / oid).write_bytes(data)
            (folder / path.name).write_text(f'version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n'
                                            f'size {len(data)}\n')
            lfs_patterns.append(path.name)
        else:
            shutil.copyfile(path, folder / path.name)
    if lfs_patterns:
        (folder / '.gitattributes').write_text(''.join(f'{name} filter=lfs diff=lfs merge=lfs -text\n'
                                                       for name in lfs_patterns))
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM='1', GIT_CONFIG_GLOBAL=os.devnull, GIT_AUTHOR_NAME='sfsc-timm tests',
               GIT_AUTHOR_EMAIL='tests@localhost', GIT_COMMITTER_NAME='sfsc-timm tests',
               GIT_COMMITTER_EMAIL='tests@localhost')
    for command in (['init', '-q', '-b', 'main'], ['add', '-A'], ['commit', '-q', '-m', 'export']):
        subprocess.run(['git', *command], cwd=folder, env=env, check=True, capture_output=True, timeout=60)
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, env=env, check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()



@contextlib.contextmanager
def olah_mirror(export_dir: Path, repo_id: str, workdir: Path, lifetime: int = 300,
                startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``export_dir`` as the model repository ``repo_id`` with olah; yields the endpoint URL.

    Args:
        export_dir: the files of the repository.
        repo_id: ``ORG/NAME``.
        workdir: an empty folder for the git repository, olah's config, cache and log.
        lifetime: seconds after which olah is stopped even if the caller never returns (``timeout``).
        startup_timeout: seconds to wait for olah to answer.
    """
    olah = Path(sys.executable).parent / 'olah-cli'
    if not olah.is_file():
        olah = Path(shutil.which('olah-cli') or '')
    if not olah.is_file():
        raise RuntimeError('olah-cli not found: pip install olah (a dev dependency of sfsc-timm).')
    mirrors, repos = workdir / 'mirrors', workdir / 'repos'
    git_repository(mirrors / 'models' / repo_id, export_dir)
    repos.mkdir()
    port = free_port()
    config = workdir / 'olah.toml'
    config.write_text(OLAH_CONFIG.format(port=port, repos=repos, mirrors=mirrors))
    log = (workdir / 'olah.out').open('wb')
    process = subprocess.Popen(
        ['timeout', '-s', 'TERM', '-k', '5', str(lifetime), str(olah), '-c', str(config),
         '--log-path', str(workdir / 'logs')],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        _wait_until_serving(f'{url}/api/models/{repo_id}/revision/main', process, startup_timeout, workdir)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group of the timeout process started above
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        log.close()


def _wait_until_serving(url: str, process: subprocess.Popen, timeout: float, workdir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'olah exited with {process.returncode}:\n{(workdir / "olah.out").read_text()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f'olah did not answer {url} within {timeout:.0f} s:\n'
                       f'{(workdir / "olah.out").read_text()[-3000:]}')
