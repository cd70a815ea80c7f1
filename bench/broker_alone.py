"""The broker alone: ``Broker.produce`` called in this process with the batches a producer sends.

The row beside ``produce 1 KiB: send_batch()`` in ``bench client``: the same 1 KiB records, cut
into batches of ``batch_bytes`` as the producer cuts them, stamped with a producer id and
sequences like an idempotent producer's, grouped into requests of at most ``max_request_bytes``
(the producer's defaults), appended with ``acks=all`` to a ``flush=never`` topic of a broker
opened on a temporary directory on the same filesystem as the spawned broker's. What it costs is
validation, producer state and the page-cache write; the difference to the end-to-end row is
gRPC and the client (encoding, serialization, the loopback socket).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time

import numpy as np

from logstore.broker import Acks, Broker, ProduceItem
from logstore.client.config import ProducerConfig
from logstore.records import RECORD_OVERHEAD, encode_columns


def batches(rows: np.ndarray, producer_id: int) -> list[bytes]:
    """``rows`` (2-D uint8, one record per row) as the idempotent producer's batches."""
    config = ProducerConfig()
    count, size = rows.shape
    per_batch = max(1, config.batch_bytes // (size + RECORD_OVERHEAD))
    out = []
    timestamp = int(time.time() * 1000)
    for first in range(0, count, per_batch):
        piece = rows[first:first + per_batch]
        out.append(encode_columns(
            value_lengths=np.full(len(piece), size, dtype=np.int32), values=piece.tobytes(),
            timestamps=timestamp, producer_id=producer_id, producer_epoch=0, base_sequence=first,
        ))
    return out


def requests(encoded: list[bytes]) -> list[bytes]:
    """Batches back to back, at most ``max_request_bytes`` per request (at least one batch)."""
    limit = ProducerConfig().max_request_bytes
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for batch in encoded:
        if current and size + len(batch) > limit:
            out.append(b"".join(current))
            current, size = [], 0
        current.append(batch)
        size += len(batch)
    if current:
        out.append(b"".join(current))
    return out


def produce_seconds(rows: np.ndarray, runs: int) -> list[float]:
    """Seconds per run of appending ``rows`` through ``Broker.produce`` (first run dropped)."""
    return asyncio.run(_runs(rows, runs))


async def _runs(rows: np.ndarray, runs: int) -> list[float]:
    directory = tempfile.mkdtemp(prefix="logstore-bench-broker-alone-")
    broker = Broker.open(directory)
    try:
        samples = []
        for run in range(runs + 1):
            topic = f"alone-{run}"
            broker.create_topic(topic, 1, {"flush": "never"})
            producer_id, _ = broker.init_producer_id()
            payloads = requests(batches(rows, producer_id))  # encoding is not timed
            start = time.perf_counter()
            for payload in payloads:
                (outcome,) = await broker.produce([ProduceItem(topic, 0, payload)], Acks.ALL)
                if outcome.error is not None:
                    raise outcome.error
            samples.append(time.perf_counter() - start)
            broker.delete_topic(topic)
        return samples[1:]
    finally:
        await broker.close()
        shutil.rmtree(directory, ignore_errors=True)
