"""What the frames tests share: the records ``poll()`` returns, as rows to compare tables with."""

from __future__ import annotations

import time
from typing import Any

from logstore.client import Consumer

Row = tuple[int, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def polled(server: str, topic: str, isolation_level: str = "read_uncommitted") -> list[Row]:
    """Every record of ``topic`` up to its end offsets, through ``poll()``, sorted by
    (partition, offset)."""
    rows: list[Row] = []
    with Consumer(server, auto_offset_reset="earliest", isolation_level=isolation_level,
                  fetch_max_wait_ms=50) as consumer:
        consumer.assign(topic)
        ends = consumer.end_offsets()
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline
            rows += [(r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers))
                     for r in consumer.poll(timeout=0.2)]
    return sorted(rows, key=lambda row: (row[0], row[1]))


def table_rows(table: Any) -> list[Row]:
    """A read_arrow table (every column) as rows like ``polled``'s, in table order."""
    columns = table.to_pydict()
    stamps = table.column("timestamp").cast("int64").to_pylist()
    return [
        (p, o, t, k, v, tuple(h))
        for p, o, t, k, v, h in zip(columns["partition"], columns["offset"], stamps,
                                    columns["key"], columns["value"], columns["headers"],
                                    strict=True)
    ]


RESTART_RECORDS = 240_000  # 24 MB: more than the socket buffers and the queue hold at a restart


def read_across_a_restart(broker: Any) -> Any:
    """Fill ``restarts`` with ``RESTART_RECORDS`` records of 100 B, start an ``iter_arrow`` of
    it, SIGKILL and restart the broker after its first batch, and read on: the offsets read
    (a numpy array)."""
    import numpy as np

    from logstore.client import Admin, Producer

    with Admin(broker.address) as admin:
        admin.create_topic("restarts", 1, {"flush": "never"})
    with Producer(broker.address) as producer:
        for first in range(0, RESTART_RECORDS, 40_000):
            producer.send_batch("restarts", np.full((40_000, 100), first // 40_000, np.uint8),
                                partition=0)
        producer.flush()
    with Consumer(broker.address, max_partition_fetch_bytes=256 << 10, retries=40,
                  retry_backoff_ms=50, retry_backoff_max_ms=200) as consumer:
        batches = consumer.iter_arrow("restarts", columns=["offset"])
        offsets = [next(batches).column("offset")]
        broker.kill()  # no grace period: the stream is cut mid-range
        broker.start()
        offsets += [batch.column("offset") for batch in batches]
    return np.concatenate([column.to_numpy() for column in offsets])


def guarded_broker(broker_factory: Any, tmp_path: Any) -> Any:
    """A broker with tokens and ACLs (``tests.server.test_security``) and a topic ``guarded``
    of ``a``, ``b``, ``c`` that the reader's token may not read."""
    from logstore.client import Admin, Producer
    from tests.server.test_security import ADMIN_TOKEN, SECURITY

    (tmp_path / "security.toml").write_text(SECURITY)
    broker = broker_factory(args=["--security-file", str(tmp_path / "security.toml")])
    with Admin(broker.address, token=ADMIN_TOKEN) as admin:
        admin.create_topic("guarded", 1)  # the reader may read public.* only
    with Producer(broker.address, token=ADMIN_TOKEN) as producer:
        producer.send_batch("guarded", [b"a", b"b", b"c"], partition=0).result(20)
    return broker


def check_guarded_reads(broker: Any) -> None:
    """``read_arrow`` of ``guarded``: the admin reads it, the reader and no token get the typed
    errors, whichever transport the streams take."""
    import pytest

    from logstore.errors import NotAuthenticatedError, NotAuthorizedError
    from tests.server.test_security import ADMIN_TOKEN, READER_TOKEN

    with Consumer(broker.address, token=ADMIN_TOKEN) as consumer:
        assert consumer.read_arrow("guarded").column("value").to_pylist() == [b"a", b"b", b"c"]
    with Consumer(broker.address, token=READER_TOKEN) as consumer, pytest.raises(NotAuthorizedError):
        consumer.read_arrow("guarded")
    with Consumer(broker.address) as consumer, pytest.raises(NotAuthenticatedError):
        consumer.read_arrow("guarded")
