""" The C allocator's settings for training on a CPU: memory a step frees is kept for the next step.

A training step allocates and frees the same few hundred megabytes every time (each width's activations and
gradients). By default glibc's malloc serves large blocks with fresh ``mmap`` pages and hands freed memory back to
the operating system, so every step page-faults its memory in again and the kernel zeroes it first. Fixing the
``mmap`` threshold at its largest value and raising the trim threshold keeps that memory in the process, where the
next step reuses it (docs/design.md, "Speed on a CPU", has the measurement). The cost is that the process keeps its
peak memory until it exits, which is what a training process does anyway.
"""
import ctypes
import ctypes.util
import os
import sys

__all__ = ['keep_freed_memory']

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2); larger blocks stay mmap'd
_TRIM_THRESHOLD = 1024 * 1024 * 1024
OPT_OUT = 'SFSC_KEEP_FREED_MEMORY'


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; a no-op elsewhere (macOS, Windows, musl) or when
    ``SFSC_KEEP_FREED_MEMORY=0``.

    Returns:
        Whether the settings were applied.
    """
    if os.environ.get(OPT_OUT, '1') == '0' or not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, 'gnu_get_libc_version'):  # mallopt of another C library may mean something else
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
