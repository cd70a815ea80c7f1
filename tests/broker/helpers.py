"""Helpers of the in-process broker suite: a ``Broker`` on tmp_path, inside ``asyncio.run``.

The broker must be built on a running loop, so every test is a plain function that runs one
coroutine: ``run(body())``. In the body, ``async with opened(path, clock) as broker`` opens the
data directory (no maintenance thread) and closes the broker cleanly at the end unless the test
already closed it or ``crash``-ed it.

``crash(broker)`` is an unclean stop: the partition logs are abandoned (no flush, no checkpoint,
no clean-shutdown marker), no producer state snapshot is written, and the directory lock is
released so the same process can reopen it — what the next ``opened`` sees after ``kill -9``
(the page cache survives; cut a .log file to simulate a torn tail).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from logstore.broker import Broker, BrokerConfig, FetchItem, Isolation, ProduceItem, ProduceOutcome
from logstore.broker.types import AbortedTransaction
from logstore.records import BatchHeader, Record, decode_columns, encode_batch
from logstore.storage import Clock, DataDir, ManualClock

T = TypeVar("T")

#: For tests that open many brokers: one __consumer_offsets partition, so fewer files and fsyncs.
LIGHT = BrokerConfig(offsets_topic_partitions=1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def open_broker(path: Path, clock: Clock | None = None, config: BrokerConfig | None = None) -> Broker:
    """A broker over the data directory at ``path``; call on the loop."""
    config = config or BrokerConfig()
    data_dir = DataDir.open(
        path, clock=clock or ManualClock(), defaults=config.topic_defaults,
        limits=config.limits, intervals=config.maintenance, background=False,
    )
    return Broker(data_dir, config, asyncio.get_running_loop())


@asynccontextmanager
async def opened(
    path: Path, clock: Clock | None = None, config: BrokerConfig | None = None
) -> AsyncIterator[Broker]:
    broker = await open_broker(path, clock, config)
    try:
        yield broker
    finally:
        if not broker.data_dir.closed:
            await broker.close()


def crash(broker: Broker) -> None:
    """Stop ``broker`` as a crash would (see the module doc)."""
    broker.closing = True
    broker._executor.shutdown(wait=True)
    data_dir = broker.data_dir
    data_dir._close_logs(clean=False)
    if data_dir._lock_file is not None:
        os.close(data_dir._lock_file)
        data_dir._lock_file = None
    data_dir.closed = True


async def produce(
    broker: Broker, topic: str, partition: int, *values: bytes, **batch: Any
) -> ProduceOutcome:
    """Append one batch of ``values`` (``batch`` = encode_batch's producer fields); raise its error."""
    data = encode_batch(list(values), **batch)
    (outcome,) = await broker.produce([ProduceItem(topic, partition, data)])
    if outcome.error is not None:
        raise outcome.error
    return outcome


def _not_aborted(aborted: list[AbortedTransaction]) -> Any:
    def include(header: BatchHeader) -> bool:
        return not any(
            a.producer_id == header.producer_id and a.first_offset <= header.base_offset <= a.last_offset
            for a in aborted
        )

    return include


async def committed_records(
    broker: Broker, topic: str, partition: int, isolation: Isolation = Isolation.READ_COMMITTED
) -> list[Record]:
    """Every record a consumer with ``isolation`` reads from log start on, as a client decodes
    it: control batches skipped and, read_committed, batches of aborted transactions dropped."""
    partition_log = broker.data_dir.log(topic, partition)
    offset = partition_log.log_start_offset
    records: list[Record] = []
    while True:
        (outcome,) = await broker.fetch([FetchItem(topic, partition, offset)], isolation=isolation)
        assert outcome.error is None, outcome.error
        if not outcome.records:
            return records
        records += decode_columns(
            outcome.records, min_offset=offset, include=_not_aborted(outcome.aborted)
        ).records()
        assert outcome.next_offset > offset
        offset = outcome.next_offset
