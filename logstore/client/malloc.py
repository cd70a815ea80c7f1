"""Keep large buffers on the heap: glibc malloc thresholds, set once when the client is imported.

By default glibc serves every allocation above 128 KiB with a fresh ``mmap`` and returns it with
``munmap``, so each ~1 MiB request or fetch the client builds costs page faults on first touch (a
1 MiB protobuf build took 1.57 ms instead of 0.09 ms). Raising ``M_MMAP_THRESHOLD`` to 64 MiB and
``M_TRIM_THRESHOLD`` to 256 MiB keeps such buffers in the heap and reuses them. The same as
running with ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456``. A no-op off
glibc, and when the environment already sets either variable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20

_tuned: bool | None = None


def tune_malloc() -> bool:
    """Apply the thresholds once per process; True if glibc took both."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _tuned = mmap_ok and trim_ok
    return _tuned
