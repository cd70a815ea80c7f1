"""``client.malloc``: freed receive buffers stay mapped for the next read (glibc only)."""

from __future__ import annotations

import subprocess
import sys

#: In a fresh interpreter: fill 128 MiB in threads (as gRPC's receive threads do), free it, fill
#: it again in new threads; print the page faults of the second fill per MiB.
REFILL = """
import resource, threading
from logstore.client import malloc
assert malloc.tune_malloc()
malloc.keep_freed(128 << 20)
source = bytes(4 << 20)
def fill(kept):
    kept += [bytearray(source) for _ in range(32)]
kept = []
thread = threading.Thread(target=fill, args=(kept,)); thread.start(); thread.join()
kept.clear()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
thread = threading.Thread(target=fill, args=(kept,)); thread.start(); thread.join()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 128)
"""


def run(script: str) -> str:
    """``script``'s output in a fresh interpreter with no MALLOC_* variables."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60, env={"PATH": "/usr/bin:/bin"}).stdout.strip()


def test_memory_freed_by_one_thread_is_reused_by_the_next_without_page_faults() -> None:
    assert float(run(REFILL)) < 16  # a fresh MiB is 256 faults of 4 KiB pages


KEEP = """
from logstore.client import malloc
assert malloc.tune_malloc()
now = malloc.keep_freed(0)
assert now == malloc.TRIM_THRESHOLD_BYTES, now
assert malloc.keep_freed(now) == 2 * now
assert malloc.keep_freed(1 << 20) == 2 * now  # never lowered
assert malloc.keep_freed(1 << 40) == malloc.MAX_KEEP_BYTES
print("ok")
"""


def test_keep_freed_only_raises_the_trim_threshold_up_to_its_cap() -> None:
    assert run(KEEP) == "ok"
