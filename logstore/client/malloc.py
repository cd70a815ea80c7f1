"""Keep large buffers on the heap: glibc malloc thresholds, set once when the client is imported.

By default glibc serves every allocation above 128 KiB with a fresh ``mmap`` and returns it with
``munmap``, so each ~1 MiB request or fetch the client builds costs page faults on first touch (a
1 MiB protobuf build took 1.57 ms instead of 0.09 ms). Raising ``M_MMAP_THRESHOLD`` to 64 MiB and
``M_TRIM_THRESHOLD`` to 256 MiB keeps such buffers in the heap and reuses them. The same as
running with ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456``. A no-op off
glibc, and when the environment already sets either variable.

One arena (``M_ARENA_MAX`` 1, as ``MALLOC_ARENA_MAX=1``; skipped when the environment sets it):
gRPC receives messages on its own threads, and glibc gives each thread an arena of 64 MiB heaps
that it unmaps as soon as a heap is empty. A range read into a table (``read_arrow``) keeps its
received messages, so every read after the first got fresh pages again: 250 page faults a MiB,
~1 ms per MiB on a VM, as much as the whole transfer. In the one main heap, freed memory stays
(up to the trim threshold) and the next read reuses it without faulting.

``keep_freed(size_bytes)`` raises the trim threshold (never lowers it; at most
``MAX_KEEP_BYTES``) so that a read of ``size_bytes`` freed by its caller stays mapped for the next
read of that size: the frames reads call it with their table's size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
#: The most ``keep_freed`` lets stay (mallopt takes a C int).
MAX_KEEP_BYTES = (1 << 31) - 1

_tuned: bool | None = None
_mallopt: Any = None
_trim_threshold_bytes = 0


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
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(M_ARENA_MAX, 1)
    _tuned = mmap_ok and trim_ok
    if _tuned:
        global _mallopt, _trim_threshold_bytes
        _mallopt, _trim_threshold_bytes = mallopt, TRIM_THRESHOLD_BYTES
    return _tuned


def keep_freed(size_bytes: int) -> int:
    """Let ``size_bytes`` of freed heap stay with the process (see above); returns the trim
    threshold now in force (0 when malloc was not tuned here)."""
    global _trim_threshold_bytes
    wanted = min(2 * max(size_bytes, 0), MAX_KEEP_BYTES)
    if _mallopt is not None and wanted > _trim_threshold_bytes:
        if _mallopt(M_TRIM_THRESHOLD, wanted) == 1:
            _trim_threshold_bytes = wanted
    return _trim_threshold_bytes
