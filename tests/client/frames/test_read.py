"""``Consumer.read_arrow`` / ``iter_arrow`` / ``read_pandas`` / ``read_polars`` against a real
broker: the same records ``poll()`` returns, over ranges of offsets and timestamps."""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from logstore.client import Admin, Consumer, Producer
from tests.broker_fixture import BrokerProcess
from tests.client.frames.helpers import Row, polled, table_rows

Topic = Callable[..., str]
BASE_MS = 1_700_000_000_000


def fill_mixed(server: str, topic: str, partitions: int, codec: str = "none") -> None:
    """Big batches with null keys and values, headers, explicit timestamps; then records sent
    one by one (small batches), so ranges cross batches of every size and segment rolls."""
    rng = random.Random(7)
    with Producer(server, codec=codec, linger_ms=0) as producer:
        for partition in range(partitions):
            count = 700
            values = [None if i % 11 == 0 else bytes(rng.randrange(256) for _ in range(i % 40))
                      for i in range(count)]
            keys = [None if i % 3 == 0 else b"k%d" % i for i in range(count)]
            headers = [[("trace", b"t%d" % i), ("empty", None), ("trace", b"")] if i % 7 == 0
                       else None for i in range(count)]
            producer.send_batch(topic, values, keys=keys, headers=headers, partition=partition,
                                timestamps=BASE_MS + np.arange(count) * 10 + partition).result(20)
            for i in range(30):
                producer.send(topic, b"one-%d" % i, key=b"s%d" % i, partition=partition,
                              timestamp=BASE_MS + 10_000 + i)
            producer.flush()


def within(rows: list[Row], spans: dict[int, tuple[int, int]]) -> list[Row]:
    return [row for row in rows if row[0] in spans and spans[row[0]][0] <= row[1] < spans[row[0]][1]]


def test_random_ranges_equal_poll_across_partitions_and_segment_rolls(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(3, segment_bytes=8192)
    fill_mixed(server, topic, 3)
    expected = polled(server, topic)
    assert len(expected) == 3 * 730
    rng = random.Random(1)
    with Consumer(server) as consumer:
        assert table_rows(consumer.read_arrow(topic)) == expected
        for _ in range(12):
            partitions = sorted(rng.sample(range(3), rng.randint(1, 3)))
            starts = {p: rng.randrange(0, 730) for p in partitions}
            ends = {p: rng.randrange(starts[p], 760) for p in partitions}
            table = consumer.read_arrow(topic, partitions, start=starts, end=ends)
            spans = {p: (starts[p], min(ends[p], 730)) for p in partitions}
            assert table_rows(table) == within(expected, spans)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_batches_read_the_same(server: str, new_topic: Topic, codec: str) -> None:
    topic = new_topic(2)
    fill_mixed(server, topic, 2, codec=codec)
    with Consumer(server) as consumer:
        assert table_rows(consumer.read_arrow(topic)) == polled(server, topic)


def test_a_timestamp_range_stops_before_the_first_record_at_its_end(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(2)
    fill_mixed(server, topic, 2)
    start = datetime.datetime.fromtimestamp((BASE_MS + 1000) / 1000, tz=datetime.UTC)
    end = datetime.datetime.fromtimestamp((BASE_MS + 2000) / 1000, tz=datetime.UTC)
    with Consumer(server) as consumer:
        table = consumer.read_arrow(topic, start=start, end=end)
    expected = [row for row in polled(server, topic) if BASE_MS + 1000 <= row[2] < BASE_MS + 2000]
    assert table_rows(table) == expected
    assert len(expected) == 2 * 100


def test_one_offset_applies_to_every_partition_and_the_end_is_capped(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(2)
    fill_mixed(server, topic, 2)
    with Consumer(server) as consumer:
        table = consumer.read_arrow(topic, start=725, end=10_000)
        assert table.column("offset").to_pylist() == [725, 726, 727, 728, 729] * 2
        assert consumer.read_arrow(topic, start="latest").num_rows == 0
        empty = consumer.read_arrow(topic, start=5, end=5)
        assert empty.num_rows == 0 and empty.schema.names == [
            "partition", "offset", "timestamp", "key", "value", "headers"]


def test_the_schema_names_its_types(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill_mixed(server, topic, 1)
    with Consumer(server) as consumer:
        schema = consumer.read_arrow(topic).schema
    assert schema.field("partition").type == pa.int32()
    assert schema.field("offset").type == pa.int64()
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("key").type == pa.binary() and schema.field("key").nullable
    assert schema.field("value").type == pa.binary() and schema.field("value").nullable
    assert schema.field("headers").type == pa.map_(pa.string(), pa.binary())


def test_columns_picks_and_orders_columns(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    fill_mixed(server, topic, 1)
    with Consumer(server) as consumer:
        table = consumer.read_arrow(topic, columns=["value", "offset"], end=3)
        assert table.column_names == ["value", "offset"]
        assert table.column("offset").to_pylist() == [0, 1, 2]
        with pytest.raises(ValueError, match="columns must be distinct names"):
            consumer.read_arrow(topic, columns=["nope"])
        with pytest.raises(ValueError, match="start must be an offset"):
            consumer.read_arrow(topic, start="yesterday")
        with pytest.raises(ValueError, match="must not be negative"):
            consumer.read_arrow(topic, start=-1)


def test_the_values_are_not_copied(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send_batch(topic, np.full((80_000, 100), 7, dtype=np.uint8), partition=0).result(20)
    with Consumer(server) as consumer:
        before = pa.total_allocated_bytes()
        table = consumer.read_arrow(topic, columns=["offset", "value"])
        grew = pa.total_allocated_bytes() - before
    values = table.column("value")
    assert sum(len(v) for v in values.chunks) == 80_000
    data_bytes = sum(chunk.buffers()[2].size for chunk in values.chunks)
    assert data_bytes == 8_000_000
    # offsets (8 B) and value offsets (4 B) per record come from numpy, not from Arrow's pool;
    # had the 8 MB of values been copied into Arrow buffers, the pool would have grown by them
    assert grew < 1_000_000


def test_iter_arrow_yields_batches_as_they_arrive(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    fill_mixed(server, topic, 2)
    with Consumer(server) as consumer:
        batches = list(consumer.iter_arrow(topic))
    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    rows = sorted(table_rows(pa.Table.from_batches(batches)), key=lambda row: (row[0], row[1]))
    assert rows == polled(server, topic)


def test_read_pandas_and_read_polars_hold_the_same_records(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    fill_mixed(server, topic, 2)
    with Consumer(server) as consumer:
        frame = consumer.read_pandas(topic, columns=["partition", "offset", "value"])
        polars_frame = consumer.read_polars(topic, columns=["partition", "offset", "value"])
    expected = [(row[0], row[1], row[4]) for row in polled(server, topic)]
    assert list(zip(frame["partition"], frame["offset"], frame["value"], strict=True)) == expected
    assert polars_frame.rows() == expected


def test_duckdb_queries_a_range_by_its_variable_name(server: str, new_topic: Topic) -> None:
    import duckdb

    topic = new_topic(2)
    fill_mixed(server, topic, 2)
    with Consumer(server) as consumer:
        orders = consumer.read_arrow(topic)  # noqa: F841 - duckdb finds it by name
    counts = duckdb.sql("select partition, count(*) from orders group by 1 order by 1").fetchall()
    assert counts == [(0, 730), (1, 730)]


def test_read_committed_drops_aborted_records_as_poll_does(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    with Producer(server, transactional_id=f"txn-{uuid.uuid4().hex[:8]}") as producer:
        producer.init_transactions()
        for round_ in range(4):
            producer.begin_transaction()
            producer.send_batch(topic, [b"r%d-%d" % (round_, i) for i in range(50)],
                                partition=round_ % 2)
            producer.send(topic, b"single-%d" % round_, partition=(round_ + 1) % 2)
            producer.flush()
            if round_ % 2:
                producer.abort_transaction()
            else:
                producer.commit_transaction()
    with Consumer(server, isolation_level="read_committed") as consumer:
        committed = consumer.read_arrow(topic)
        everything = consumer.read_arrow(topic, isolation_level="read_uncommitted")
    assert table_rows(committed) == polled(server, topic, "read_committed")
    assert table_rows(everything) == polled(server, topic, "read_uncommitted")
    assert committed.num_rows == 102 and everything.num_rows == 204


def busy_broker(broker_factory: Callable[..., BrokerProcess], tmp_path: Path, interval: str) -> str:
    """A broker whose maintenance ``interval`` (compaction, retention) is 200 ms."""
    config = tmp_path / "broker.toml"
    config.write_text(f"[maintenance]\n{interval} = 200\n")
    return str(broker_factory(config=config).address)


def test_a_compacted_topic_gives_the_gaps_compaction_left(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    server = busy_broker(broker_factory, tmp_path, "compaction_interval_ms")
    with Admin(server) as admin:
        admin.create_topic("latest", 1, {"cleanup_policy": "compact", "segment_bytes": 4096})
        with Producer(server, linger_ms=0) as producer:
            for round_ in range(30):
                producer.send_batch("latest", [b"v%d-%d" % (round_, i) for i in range(20)],
                                    keys=[b"key-%d" % i for i in range(20)], partition=0).result(20)
        import time

        deadline = time.monotonic() + 30
        expected = polled(server, "latest")
        while time.monotonic() < deadline:  # until compaction has nothing left to do
            time.sleep(1.0)  # five compaction intervals
            again = polled(server, "latest")
            if again == expected and len(expected) < 600:
                break
            expected = again
    assert len(expected) < 600  # compacted: gaps in the offsets
    with Consumer(server) as consumer:
        table = consumer.read_arrow("latest")
        assert table_rows(table) == expected
        middle = expected[len(expected) // 2][1]
        assert table_rows(consumer.read_arrow("latest", start=middle - 3)) == [
            row for row in expected if row[1] >= middle - 3]


def test_an_unknown_topic_and_a_closed_consumer_are_errors(server: str) -> None:
    from logstore.errors import InvalidRequestError, UnknownTopicError

    consumer = Consumer(server)
    with pytest.raises(UnknownTopicError):
        consumer.read_arrow("no-such-topic")
    consumer.close()
    with pytest.raises(InvalidRequestError, match="the consumer is closed"):
        consumer.read_arrow("no-such-topic")


def test_a_start_the_log_no_longer_holds_is_out_of_range(
    broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    import time

    from logstore.errors import OffsetOutOfRangeError

    server = busy_broker(broker_factory, tmp_path, "retention_check_interval_ms")
    with Admin(server) as admin:
        admin.create_topic("short", 1, {"retention_bytes": 8192, "segment_bytes": 4096})
        with Producer(server, linger_ms=0) as producer:
            for _round in range(40):
                producer.send_batch("short", [b"x" * 100] * 10, partition=0).result(20)
        with Consumer(server) as consumer:
            consumer.assign("short")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(consumer.beginning_offsets().values()):
                time.sleep(0.2)
            (first,) = consumer.beginning_offsets().values()
            assert first > 0
            with pytest.raises(OffsetOutOfRangeError):
                consumer.read_arrow("short", start=0)
            assert consumer.read_arrow("short").column("offset")[0].as_py() == first
