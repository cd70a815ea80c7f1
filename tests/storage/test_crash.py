"""A real crash: a child process appends with flush=always and prints each acknowledged record;
it is SIGKILLed mid-stream, and every acknowledged record must be there, byte for byte."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from logstore.records import decode_records
from logstore.storage import LogConfig, PartitionLog

CONFIG = LogConfig(segment_bytes=8192, index_interval_bytes=512, segment_index_bytes=256, flush="always")

CHILD = textwrap.dedent(
    """
    import hashlib, sys, threading
    from logstore.records import encode_batch
    from logstore.storage import LogConfig, PartitionLog

    config = LogConfig(segment_bytes=8192, index_interval_bytes=512, segment_index_bytes=256,
                       flush="always")
    log = PartitionLog.open(sys.argv[1], config=config)
    threads = int(sys.argv[2])
    out = threading.Lock()

    def value(thread, i, r):
        seed = hashlib.sha256(b"%d/%d/%d" % (thread, i, r)).digest()
        return seed * (1 + i % 7)

    def produce(thread):
        i = 0
        while True:
            values = [value(thread, i, r) for r in range(1 + i % 3)]
            result = log.append(encode_batch(values))  # returns once the batch is on disk
            with out:
                for r, v in enumerate(values):
                    sys.stdout.write("%d %s\\n" % (result.base_offset + r, v.hex()))
                sys.stdout.flush()
            i += 1

    workers = [threading.Thread(target=produce, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    """
)


def run_and_kill(directory, threads: int, seconds: float) -> dict[int, bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child acknowledged nothing in 30 s"
        time.sleep(seconds)
    finally:
        child.send_signal(signal.SIGKILL)
        output, errors = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, errors.decode()
    acknowledged: dict[int, bytes] = {}
    for line in output.decode().split("\n")[:-1]:  # a last line without "\n" was never finished
        offset, value = line.split()
        acknowledged[int(offset)] = bytes.fromhex(value)
    return acknowledged


@pytest.mark.parametrize("threads", [1, 4])
def test_every_acknowledged_record_survives_sigkill(tmp_path, threads):
    acknowledged = run_and_kill(tmp_path, threads, seconds=1.0)
    assert len(acknowledged) > 10
    partition_log = PartitionLog.open(tmp_path, config=CONFIG)
    try:
        assert partition_log.log_end_offset > max(acknowledged)
        assert len(partition_log.segments) > 1  # the child rolled segments before it died
        found: dict[int, bytes] = {}
        offset = 0
        while offset < partition_log.log_end_offset:
            records = decode_records(partition_log.read(offset).data, min_offset=offset)
            found.update((r.offset, r.value) for r in records)
            offset = records[-1].offset + 1
        for offset, value in acknowledged.items():
            assert found.get(offset) == value, offset
        assert sorted(found) == list(range(partition_log.log_end_offset))
    finally:
        partition_log.close()
