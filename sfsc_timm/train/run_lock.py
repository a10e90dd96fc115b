""" One run at a time per run folder: an advisory lock (``flock``) on ``RUN/.lock``.

The kernel drops the lock when its process ends, however it ends, so a killed run never leaves it stuck; the file
itself stays (deleting it would let two runs lock two different files).
"""
import fcntl
import os
from pathlib import Path
from typing import Optional, Union

from ..atomic_io import default_mode
from ..errors import UsageError

__all__ = ['LOCK_NAME', 'RunLock']

LOCK_NAME = '.lock'


class RunLock:
    """Held while ``sfsc-timm train`` writes into ``run_dir``; a second run for the same folder is refused.

    Use as a context manager::

        with RunLock(cfg.run_dir):
            Trainer(cfg).run()
    """

    def __init__(self, run_dir: Union[str, Path]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> 'RunLock':
        """Take the lock.

        Raises:
            UsageError: another process holds it (named by its pid).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, default_mode(False))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise UsageError(f'another sfsc-timm train (pid {holder}) is writing to {self.run_dir}; wait for it to '
                             'finish, or give this run another --output.') from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> 'RunLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
