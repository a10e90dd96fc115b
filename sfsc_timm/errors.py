""" How every ``sfsc-timm`` command reports a failure: one line on stderr naming the problem and the fix.

Exit status 2 for bad input or usage (something the command line, a recipe or a file must change), 1 for a failure
at run time (a full disk, a network error, diverging training), 130 when interrupted (Ctrl-C), 143 when terminated
(SIGTERM). No traceback, unless
``--debug`` is given anywhere on the command line or ``SFSC_DEBUG=1`` is set; then the traceback comes first.
"""
import argparse
import errno
import os
import signal
import sys
import threading
import traceback
from typing import Callable, List, NoReturn, Optional, Sequence

import yaml

__all__ = ['UsageError', 'RunError', 'CommandParser', 'exit_status', 'describe', 'run_command', 'debug_requested',
           'check_output_folder_writable', 'at_least']

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler or ``kill`` stopping the command): unwinds like Ctrl-C, so writes stay whole."""

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class UsageError(ValueError):
    """Bad input or usage: the message names what to change."""


class RunError(RuntimeError):
    """A failure at run time that the message explains (the command may work when run again)."""


class CommandParser(argparse.ArgumentParser):
    """argparse, with usage errors raised as one-line :class:`UsageError` s and a ``--debug`` flag in the help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true',
                          help='show the traceback of an error (also: environment variable SFSC_DEBUG=1)')

    def error(self, message: str) -> NoReturn:
        raise UsageError(f'{message}; see {self.prog} --help')


def at_least(minimum: float, kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse ``type`` for a number that must be ``>= minimum``: a value below it is a usage error naming the
    option, before any work (``argument --atol: must be >= 0, got -1``)."""
    def parse(text: str) -> float:
        value = kind(text)
        if not value >= minimum:  # NaN too
            raise argparse.ArgumentTypeError(f'must be >= {minimum:g}, got {text}')
        return value
    parse.__name__ = getattr(kind, '__name__', 'number')  # argparse's "invalid int value" on a non-number
    return parse


def debug_requested(argv: Sequence[str]) -> bool:
    return '--debug' in argv or os.environ.get('SFSC_DEBUG', '').lower() in ('1', 'true', 'yes')


def exit_status(error: BaseException) -> int:
    """2 for bad input or usage, 1 for a failure at run time."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, Terminated):
        return EXIT_TERMINATED
    if isinstance(error, (UsageError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                          yaml.YAMLError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def _one_line(text: str) -> str:
    return ' '.join(text.split())


def describe(error: BaseException) -> str:
    """The error as one line: its own message where it explains itself, else what failed and what to do."""
    if isinstance(error, (KeyboardInterrupt, Terminated)):
        # every file is written whole or not at all (atomic_io), so what is on disk is complete
        how = 'interrupted (Ctrl-C)' if isinstance(error, KeyboardInterrupt) else 'terminated (SIGTERM)'
        return f'{how}; every file already written is complete, nothing half-written was left'
    if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, NotADirectoryError,
                                                             IsADirectoryError)):
        where = f' ({error.filename})' if error.filename else ''
        reason = error.strerror or str(error)
        if error.errno in _NO_SPACE:
            return _one_line(f'cannot write{where}: {reason}. Free disk space (or choose an output folder on another '
                             'disk) and run the command again; files already complete are kept.')
        if error.errno in _NOT_WRITABLE:
            return _one_line(f'cannot write{where}: {reason}. Choose a folder you can write to.')
        return _one_line(f'{type(error).__name__}{where}: {reason}')
    message = str(error) or type(error).__name__
    known = (UsageError, RunError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             yaml.YAMLError)
    if not isinstance(error, known) and type(error).__module__.split('.')[0] not in ('sfsc_timm',):
        # not one of ours: say what it was, and how to see where
        message = f'{type(error).__name__}: {message} (run with --debug for the traceback)'
    return _one_line(message)


def run_command(prog: str, command: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``command(argv)`` (``--debug`` removed) and turn any error into one line on stderr and an exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != '--debug']
    previous = _raise_on_sigterm()
    try:
        return command(argv) or 0
    except SystemExit as done:  # --help, --version: argparse's own exit
        return done.code if isinstance(done.code, int) else (0 if done.code is None else EXIT_FAILED)
    except BaseException as error:  # noqa: B902 (every failure becomes one line and a status)
        if debug:
            traceback.print_exc()
        message = describe(error)
        if isinstance(error, (KeyboardInterrupt, Terminated)) and prog == 'sfsc-timm train':
            message += '; continue the run with sfsc-timm train --resume RUN_FOLDER'
        print(f'{prog}: error: {message}', file=sys.stderr)
        return exit_status(error)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in the main thread while a command runs; the previous handler (to
    restore), or None where no handler can be set (another thread, a platform without SIGTERM)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, 'SIGTERM'):
        return None

    def terminate(signum, frame):
        raise Terminated()
    return signal.signal(signal.SIGTERM, terminate)


def check_output_folder_writable(folder: os.PathLike, flag: str = '--output',
                                 file: Optional[os.PathLike] = None) -> None:
    """Before any work: ``folder`` (or the nearest existing folder above it) must be a folder this process can write.

    Args:
        folder: The folder to write in.
        flag: The option that named it, for the message.
        file: The file to be written in ``folder``, when `flag` named that file rather than the folder.

    Raises:
        UsageError: it is a file, or not writable (read-only, another owner, immutable), naming ``flag``.
    """
    path = os.fspath(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        if file is not None:
            raise UsageError(f'{flag} {os.fspath(file)}: {path} is a file, so no folder can be made under it; choose '
                             f'another {flag}.')
        raise UsageError(f'{flag} {path} is a file, not a folder; choose a folder.')
    existing = path
    while not os.path.isdir(existing):
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == existing:
            break
        if os.path.exists(parent) and not os.path.isdir(parent):  # a/file/out: no folder can be made under a file
            raise UsageError(f'{flag} {path}: {parent} is a file, so no folder can be made under it; choose another '
                             f'{flag}.')
        existing = parent
    probe = os.path.join(existing, f'.sfsc-write-test.{os.getpid()}')
    try:  # os.access says yes to root even where the file system says no (read-only mounts, immutable folders)
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise UsageError(f'{flag} {path}: cannot write in {existing} ({e.strerror}); choose a folder you can '
                         'write to.') from None
