"""Replay after a restart: from an offset, a time, the earliest and the latest offset, across
segment rolls (4 KiB segments) and below the retention horizon."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from logstore.api.v1 import records_pb2
from logstore.records import decode_records, now_ms
from tests.broker_fixture import BrokerProcess
from tests.server.helpers import (
    TIMEOUT_S,
    connect,
    create_topic,
    describe,
    failure,
    fetch_partition,
    produce,
    read_all,
    values,
)

BATCHES = 30
PER_BATCH = 10


@dataclass
class Replayed:
    broker: BrokerProcess
    topic: str
    values: list[bytes]  # values[i] is the value at offset i
    base_ms: int  # batch i is stamped base_ms + 1000 * i
    exit_code: int | None


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Replayed:
    """A topic of 300 records in 4 KiB segments, written, then the broker restarted."""
    process = BrokerProcess(tmp_path_factory.mktemp("replay-broker") / "data").start()
    topic = "replay"
    base_ms = now_ms() - 3_600_000
    written: list[bytes] = []
    with connect(process.address) as stub:
        create_topic(stub, topic, segment_bytes="4096")
        for i in range(BATCHES):
            batch_values = [f"b{i:02d}-r{j}-".encode().ljust(60, b"~") for j in range(PER_BATCH)]
            produce(stub, topic, batch_values, timestamps=base_ms + 1000 * i)
            written += batch_values
    exit_code = process.stop()
    process.start()
    yield Replayed(process, topic, written, base_ms, exit_code)
    process.kill()


@pytest.fixture(scope="module")
def stub(replayed):
    with connect(replayed.broker.address) as s:
        yield s


def _list_offset(stub, topic, spec, timestamp_ms=0):
    response = stub.ListOffsets(
        records_pb2.ListOffsetsRequest(
            partitions=[records_pb2.ListOffsetsPartition(topic=topic, spec=spec, timestamp_ms=timestamp_ms)]
        ),
        timeout=TIMEOUT_S,
    )
    assert not response.offsets[0].HasField("error"), response.offsets[0].error
    return response.offsets[0].offset


def test_topic_and_its_segments_survive_a_clean_restart(stub, replayed):
    description = describe(stub, replayed.topic)

    assert replayed.exit_code == 0
    assert description.config["segment_bytes"] == "4096"
    (partition,) = description.partitions
    assert (partition.log_start_offset, partition.log_end_offset) == (0, BATCHES * PER_BATCH)
    assert partition.segments >= 5


def test_replay_from_earliest_after_restart(stub, replayed):
    earliest = _list_offset(stub, replayed.topic, records_pb2.OFFSET_EARLIEST)

    assert earliest == 0
    assert values(read_all(stub, replayed.topic, offset=earliest)) == replayed.values


@pytest.mark.parametrize("offset", [1, 95, 137, 200, 299])
def test_replay_from_an_offset_after_restart(stub, replayed, offset):
    records = read_all(stub, replayed.topic, offset=offset)

    assert [r.offset for r in records] == list(range(offset, BATCHES * PER_BATCH))
    assert values(records) == replayed.values[offset:]


def test_replay_from_a_time_after_restart(stub, replayed):
    offset = _list_offset(stub, replayed.topic, records_pb2.OFFSET_TIMESTAMP, replayed.base_ms + 17_000)

    assert offset == 17 * PER_BATCH
    records = read_all(stub, replayed.topic, offset=offset)
    assert values(records) == replayed.values[offset:]
    assert records[0].timestamp == replayed.base_ms + 17_000


def test_replay_one_batch_per_fetch_crosses_every_segment_after_restart(stub, replayed):
    offsets = []
    offset = 0
    for _ in range(BATCHES + 1):
        fetched = fetch_partition(stub, replayed.topic, offset=offset, max_bytes=1)
        if not fetched.records:
            break
        records = decode_records(fetched.records)
        assert len(records) == PER_BATCH
        offsets.append(records[0].offset)
        offset = fetched.next_offset

    assert offsets == list(range(0, BATCHES * PER_BATCH, PER_BATCH))


def test_subscribe_replays_from_an_offset_across_segments_after_restart(stub, replayed):
    call = stub.Subscribe(
        records_pb2.SubscribeRequest(
            topic=replayed.topic, start=records_pb2.START_OFFSET, offset=95, max_bytes=1
        ),
        timeout=TIMEOUT_S,
    )
    delivered = []
    try:
        for response in call:
            delivered += [r for r in decode_records(response.records) if r.offset >= 95]
            if response.next_offset >= BATCHES * PER_BATCH:
                break
    finally:
        call.cancel()

    assert values(delivered) == replayed.values[95:]


def test_replay_from_latest_after_restart_sees_only_new_records(stub, replayed):
    latest = _list_offset(stub, replayed.topic, records_pb2.OFFSET_LATEST)
    assert latest == BATCHES * PER_BATCH
    assert fetch_partition(stub, replayed.topic, offset=latest).records == b""

    result = produce(stub, replayed.topic, [b"after-restart"])

    assert result.base_offset == latest
    assert values(read_all(stub, replayed.topic, offset=latest)) == [b"after-restart"]


# -- below the retention horizon (the suite-wide ``retained`` broker; see conftest.py) ---------------


@pytest.mark.late
def test_retention_deletes_the_oldest_segments_and_raises_log_start(retained):
    log_start = retained.wait_for_retention()

    with connect(retained.broker.address) as stub:
        (partition,) = describe(stub, retained.topic).partitions
    assert partition.log_start_offset == log_start
    assert log_start % 10 == 0  # a batch (and segment) boundary
    assert partition.log_end_offset == len(retained.values)
    assert partition.size_bytes <= 8192 + 4096


@pytest.mark.late
def test_fetch_below_the_retention_horizon_is_out_of_range(retained):
    log_start = retained.wait_for_retention()

    with connect(retained.broker.address) as stub:
        fetched = fetch_partition(stub, retained.topic, offset=log_start - 1)

    assert fetched.error.reason == "OFFSET_OUT_OF_RANGE"
    assert fetched.error.metadata["log_start_offset"] == str(log_start)
    assert fetched.error.metadata["log_end_offset"] == str(len(retained.values))


@pytest.mark.late
def test_replay_from_earliest_below_the_horizon_after_restart(retained):
    log_start = retained.wait_for_retention()
    assert retained.broker.stop() == 0
    retained.broker.start()

    with connect(retained.broker.address) as stub:
        earliest = _list_offset(stub, retained.topic, records_pb2.OFFSET_EARLIEST)
        records = read_all(stub, retained.topic, offset=earliest)
        below = fetch_partition(stub, retained.topic, offset=0)

    assert earliest == log_start
    assert values(records) == retained.values[log_start:]
    assert below.error.reason == "OFFSET_OUT_OF_RANGE"


@pytest.mark.late
def test_subscribe_below_the_horizon_is_out_of_range_and_earliest_starts_at_log_start(retained):
    log_start = retained.wait_for_retention()

    with connect(retained.broker.address) as stub:
        below = stub.Subscribe(
            records_pb2.SubscribeRequest(topic=retained.topic, start=records_pb2.START_OFFSET, offset=0),
            timeout=TIMEOUT_S,
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(below)
        earliest = stub.Subscribe(records_pb2.SubscribeRequest(topic=retained.topic), timeout=TIMEOUT_S)
        try:
            first = decode_records(next(earliest).records)
        finally:
            earliest.cancel()

    got = failure(raised.value)
    assert (got.code, got.reason) == (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE")
    assert got.metadata["log_start_offset"] == str(log_start)
    assert first[0].offset == log_start
    assert first[0].value == retained.values[log_start]
