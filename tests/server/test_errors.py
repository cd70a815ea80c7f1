"""Every bad input gets its gRPC status and its ErrorInfo reason (domain logstore.dev), appends
nothing, and leaves the server serving.

The module shares one broker started with a 1 MiB request limit and two subscriptions per
connection (``--config``), so an oversized request costs a megabyte, not 64.
"""

from __future__ import annotations

import struct
import time

import grpc
import pytest
from crc32c import crc32c

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.records.layout import (
    CRC_POSITION,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    MAGIC,
    RECORD_COUNT_POSITION,
)
from tests.broker_fixture import BrokerProcess
from tests.server.helpers import (
    TIMEOUT_S,
    batch,
    connect,
    create_topic,
    expect_failure,
    failure,
    fetch_partition,
    log_ends,
    produce,
    produce_request,
    read_all,
    values,
    values_of,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
MAX_REQUEST_BYTES = 1 << 20
MAX_SUBSCRIPTIONS = 2


@pytest.fixture(scope="module")
def limited_broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("limited-broker")
    config = directory / "logstore.toml"
    config.write_text(
        f"[limits]\nmax_request_bytes = {MAX_REQUEST_BYTES}\n"
        f"max_subscriptions_per_connection = {MAX_SUBSCRIPTIONS}\n"
    )
    process = BrokerProcess(directory / "data", config=config).start()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def stub(limited_broker):
    with connect(limited_broker.address) as s:
        yield s


@pytest.fixture
def existing(stub, topic):
    """A topic with two partitions and three records in each."""
    create_topic(stub, topic, partitions=2)
    for p in range(2):
        produce(stub, topic, values_of(f"p{p}", 3), partition=p)
    return topic


def _fetch_request(topic, partition=0, offset=0, **fields):
    return records_pb2.FetchRequest(
        partitions=[records_pb2.FetchPartition(topic=topic, partition=partition, offset=offset)], **fields
    )


def _subscribe_error(stub, request):
    call = stub.Subscribe(request, timeout=TIMEOUT_S)
    try:
        first = next(call)
    except grpc.RpcError as err:
        return err
    finally:
        call.cancel()
    raise AssertionError(f"expected the subscription to fail, got {first}")


def _assert_status(err, code, reason):
    got = failure(err)
    assert (got.code, got.reason) == (code, reason), got
    return got


# -- unknown topics and partitions ------------------------------------------------------------------


def test_produce_to_an_unknown_topic_is_not_found(stub, topic):
    got = expect_failure(stub.Produce, produce_request(topic, batch([b"x"])), NOT_FOUND, "UNKNOWN_TOPIC")
    assert got.metadata["topic"] == topic


@pytest.mark.parametrize("method", ["DescribeTopic", "DeleteTopic", "AlterTopicConfig", "AddPartitions"])
def test_admin_call_on_an_unknown_topic_is_not_found(stub, topic, method):
    requests = {
        "DescribeTopic": admin_pb2.DescribeTopicRequest(name=topic),
        "DeleteTopic": admin_pb2.DeleteTopicRequest(name=topic),
        "AlterTopicConfig": admin_pb2.AlterTopicConfigRequest(name=topic, set={"flush": "always"}),
        "AddPartitions": admin_pb2.AddPartitionsRequest(name=topic, total=2),
    }
    expect_failure(getattr(stub, method), requests[method], NOT_FOUND, "UNKNOWN_TOPIC")


def test_fetch_from_an_unknown_topic_is_a_partition_error(stub, existing):
    response = stub.Fetch(
        records_pb2.FetchRequest(
            partitions=[
                records_pb2.FetchPartition(topic=existing + "-missing", partition=0),
                records_pb2.FetchPartition(topic=existing, partition=0),
            ]
        ),
        timeout=TIMEOUT_S,
    )

    missing, present = response.partitions
    assert (missing.error.code, missing.error.reason) == (NOT_FOUND.value[0], "UNKNOWN_TOPIC")
    assert missing.records == b""
    assert not present.HasField("error")


def test_list_offsets_of_an_unknown_partition_is_a_partition_error(stub, existing):
    response = stub.ListOffsets(
        records_pb2.ListOffsetsRequest(
            partitions=[records_pb2.ListOffsetsPartition(topic=existing, partition=7)]
        ),
        timeout=TIMEOUT_S,
    )

    (listed,) = response.offsets
    assert (listed.error.code, listed.error.reason) == (NOT_FOUND.value[0], "UNKNOWN_PARTITION")
    assert listed.error.metadata["partitions"] == "2"


def test_subscribe_to_an_unknown_topic_is_not_found(stub, topic):
    err = _subscribe_error(stub, records_pb2.SubscribeRequest(topic=topic))
    _assert_status(err, NOT_FOUND, "UNKNOWN_TOPIC")


def test_produce_to_an_unknown_partition_is_not_found(stub, existing):
    got = expect_failure(
        stub.Produce, produce_request(existing, batch([b"x"]), partition=2), NOT_FOUND, "UNKNOWN_PARTITION"
    )
    assert (got.metadata["partition"], got.metadata["partitions"]) == ("2", "2")


def test_fetch_from_an_unknown_partition_is_a_partition_error(stub, existing):
    fetched = fetch_partition(stub, existing, partition=9)

    assert (fetched.error.code, fetched.error.reason) == (NOT_FOUND.value[0], "UNKNOWN_PARTITION")


def test_subscribe_to_an_unknown_partition_is_not_found(stub, existing):
    err = _subscribe_error(stub, records_pb2.SubscribeRequest(topic=existing, partition=5))
    _assert_status(err, NOT_FOUND, "UNKNOWN_PARTITION")


def test_produce_with_one_unknown_partition_appends_nothing(stub, existing):
    request = records_pb2.ProduceRequest(
        partitions=[
            records_pb2.PartitionRecords(topic=existing, partition=0, records=batch([b"good"])),
            records_pb2.PartitionRecords(topic=existing, partition=4, records=batch([b"bad"])),
        ]
    )

    expect_failure(stub.Produce, request, NOT_FOUND, "UNKNOWN_PARTITION")

    assert log_ends(stub, existing) == [3, 3]


def test_creating_an_existing_topic_is_already_exists(stub, existing):
    got = expect_failure(
        stub.CreateTopic,
        admin_pb2.CreateTopicRequest(name=existing, partitions=5),
        grpc.StatusCode.ALREADY_EXISTS,
        "TOPIC_EXISTS",
    )
    assert got.metadata["topic"] == existing
    assert log_ends(stub, existing) == [3, 3]


# -- offsets out of range ---------------------------------------------------------------------------


def test_fetch_past_the_log_end_is_a_partition_out_of_range_error(stub, existing):
    fetched = fetch_partition(stub, existing, offset=4)

    assert fetched.error.code == grpc.StatusCode.OUT_OF_RANGE.value[0] == 11
    assert fetched.error.reason == "OFFSET_OUT_OF_RANGE"
    assert fetched.error.metadata["log_start_offset"] == "0"
    assert fetched.error.metadata["log_end_offset"] == "3"
    assert fetched.error.metadata["offset"] == "4"
    assert fetched.records == b""


def test_fetch_out_of_range_does_not_fail_the_other_partitions(stub, existing):
    response = stub.Fetch(
        records_pb2.FetchRequest(
            partitions=[
                records_pb2.FetchPartition(topic=existing, partition=0, offset=100),
                records_pb2.FetchPartition(topic=existing, partition=1, offset=0),
            ]
        ),
        timeout=TIMEOUT_S,
    )

    bad, good = response.partitions
    assert bad.error.reason == "OFFSET_OUT_OF_RANGE"
    assert not good.HasField("error")
    assert good.records


def test_subscribe_past_the_log_end_is_out_of_range(stub, existing):
    err = _subscribe_error(
        stub, records_pb2.SubscribeRequest(topic=existing, start=records_pb2.START_OFFSET, offset=10)
    )
    got = _assert_status(err, grpc.StatusCode.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE")
    assert (got.metadata["log_start_offset"], got.metadata["log_end_offset"]) == ("0", "3")


# -- corrupt batches --------------------------------------------------------------------------------


def _recrc(data: bytes) -> bytes:
    """Fix the crc of a (single) batch whose header fields were edited."""
    crc = crc32c(data[CRC_START:])
    return data[:CRC_POSITION] + struct.pack("<I", crc) + data[CRC_POSITION + 4 :]


def _with_field(data: bytes, position: int, fmt: str, value: int, *, fix_crc: bool = True) -> bytes:
    edited = data[:position] + struct.pack(fmt, value) + data[position + struct.calcsize(fmt) :]
    return _recrc(edited) if fix_crc else edited


def _good() -> bytes:
    return batch(values_of("v", 4))


def _bad_crc() -> bytes:
    data = bytearray(_good())
    data[-1] ^= 0xFF
    return bytes(data)


def _length_longer_than_payload() -> bytes:
    data = _good()
    return _with_field(data, 8, "<i", len(data) + 100, fix_crc=False)


def _length_shorter_than_batch() -> bytes:
    data = _good()
    return _with_field(data, 8, "<i", len(data) - 8, fix_crc=False)


def _length_shorter_than_header() -> bytes:
    return _with_field(_good(), 8, "<i", 12, fix_crc=False)


def _record_less_batch() -> bytes:
    """A well-formed header (valid crc) announcing zero records, and nothing after it."""
    header = HEADER_STRUCT.pack(0, HEADER_SIZE, 0, 0, MAGIC, 0, 0, 0, 0, 1000, 1000, -1, -1, 0, -1)
    return _recrc(header)


CORRUPT_BATCHES = {
    "bad-crc": _bad_crc,
    "length-past-the-payload": _length_longer_than_payload,
    "length-short-of-the-batch": _length_shorter_than_batch,
    "length-inside-the-header": _length_shorter_than_header,
    "negative-record-count": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", -1),
    "huge-record-count": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", 1 << 30),
    "record-count-too-small": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", 2),
    "bad-magic": lambda: _with_field(_good(), 20, "<B", 9),
    "garbage": lambda: bytes(range(256)) * 3,
    "truncated-header": lambda: _good()[: HEADER_SIZE - 1],
    "truncated-records": lambda: _good()[:-3],
    "trailing-garbage": lambda: _good() + b"\x01\x02\x03",
    "empty-records": lambda: b"",
    "zero-records": _record_less_batch,
}

@pytest.mark.parametrize("kind", list(CORRUPT_BATCHES))
def test_corrupt_batch_is_invalid_argument_and_appends_nothing(stub, existing, kind):
    payload = CORRUPT_BATCHES[kind]()

    expect_failure(stub.Produce, produce_request(existing, payload), INVALID_ARGUMENT, "CORRUPT_BATCH")

    assert log_ends(stub, existing) == [3, 3]


def test_corrupt_batch_in_one_partition_fails_the_good_partition_too(stub, existing):
    request = records_pb2.ProduceRequest(
        partitions=[
            records_pb2.PartitionRecords(topic=existing, partition=0, records=batch([b"fine"])),
            records_pb2.PartitionRecords(topic=existing, partition=1, records=_bad_crc()),
        ]
    )

    got = expect_failure(stub.Produce, request, INVALID_ARGUMENT, "CORRUPT_BATCH")

    assert (got.metadata["topic"], got.metadata["partition"]) == (existing, "1")
    assert log_ends(stub, existing) == [3, 3]


def test_corrupt_batch_after_a_good_one_in_the_same_payload_appends_nothing(stub, existing):
    payload = batch([b"fine"]) + _bad_crc()

    got = expect_failure(stub.Produce, produce_request(existing, payload), INVALID_ARGUMENT, "CORRUPT_BATCH")

    assert got.metadata["position"] == str(len(batch([b"fine"])))
    assert log_ends(stub, existing) == [3, 3]


def test_batch_over_max_batch_bytes_is_batch_too_large(stub, topic):
    create_topic(stub, topic, max_batch_bytes="1024")
    payload = batch([b"x" * 2000])

    got = expect_failure(stub.Produce, produce_request(topic, payload), INVALID_ARGUMENT, "BATCH_TOO_LARGE")

    assert (got.metadata["size"], got.metadata["limit"]) == (str(len(payload)), "1024")
    assert log_ends(stub, topic) == [0]


def test_request_over_the_max_request_size_is_resource_exhausted(stub, existing):
    payload = batch([b"x" * (MAX_REQUEST_BYTES + 1024)])

    expect_failure(stub.Produce, produce_request(existing, payload), grpc.StatusCode.RESOURCE_EXHAUSTED)

    assert log_ends(stub, existing) == [3, 3]


# -- invalid names and configs ----------------------------------------------------------------------


INVALID_NAMES = {
    "dot-dot-slash": "../x",
    "empty": "",
    "250-chars": "a" * 250,
    "nul": "a\x00b",
    "unicode": "t\u00f6pic",
    "slash": "a/b",
    "dot": ".",
    "dot-dot": "..",
    "space": "a b",
    "reserved-prefix": "__mine",
}


@pytest.mark.parametrize("name", list(INVALID_NAMES.values()), ids=list(INVALID_NAMES))
def test_creating_a_topic_with_an_invalid_name_is_invalid_name(stub, name):
    expect_failure(
        stub.CreateTopic, admin_pb2.CreateTopicRequest(name=name, partitions=1), INVALID_ARGUMENT, "INVALID_NAME"
    )


def test_a_249_character_name_is_valid(stub):
    name = "n" * 249
    assert create_topic(stub, name).name == name


def test_producing_to_an_invalid_name_is_invalid_name(stub):
    expect_failure(stub.Produce, produce_request("../etc", batch([b"x"])), INVALID_ARGUMENT, "INVALID_NAME")


def test_an_unknown_config_key_is_invalid_config(stub, topic):
    got = expect_failure(
        stub.CreateTopic,
        admin_pb2.CreateTopicRequest(name=topic, partitions=1, config={"no_such_key": "1"}),
        INVALID_ARGUMENT,
        "INVALID_CONFIG",
    )
    assert got.metadata["key"] == "no_such_key"
    expect_failure(stub.DescribeTopic, admin_pb2.DescribeTopicRequest(name=topic), NOT_FOUND, "UNKNOWN_TOPIC")


def test_a_bad_config_value_is_invalid_config(stub, topic):
    got = expect_failure(
        stub.CreateTopic,
        admin_pb2.CreateTopicRequest(name=topic, partitions=1, config={"segment_bytes": "lots"}),
        INVALID_ARGUMENT,
        "INVALID_CONFIG",
    )
    assert got.metadata["key"] == "segment_bytes"


@pytest.mark.parametrize("field", ["set", "reset"])
def test_altering_an_unknown_config_key_is_invalid_config(stub, existing, field):
    request = admin_pb2.AlterTopicConfigRequest(name=existing)
    if field == "set":
        request.set["no_such_key"] = "1"
    else:
        request.reset.append("no_such_key")

    expect_failure(stub.AlterTopicConfig, request, INVALID_ARGUMENT, "INVALID_CONFIG")


# -- invalid request fields -------------------------------------------------------------------------


def test_produce_to_a_negative_partition_is_invalid_request(stub, existing):
    got = expect_failure(
        stub.Produce, produce_request(existing, batch([b"x"]), partition=-1), INVALID_ARGUMENT, "INVALID_REQUEST"
    )
    assert got.metadata["field"] == "partition"


def test_fetch_from_a_negative_partition_is_invalid_request(stub, existing):
    expect_failure(stub.Fetch, _fetch_request(existing, partition=-1), INVALID_ARGUMENT, "INVALID_REQUEST")


def test_fetch_from_a_negative_offset_is_invalid_request(stub, existing):
    got = expect_failure(stub.Fetch, _fetch_request(existing, offset=-1), INVALID_ARGUMENT, "INVALID_REQUEST")
    assert got.metadata["field"] == "offset"


def test_fetch_with_a_negative_max_wait_is_invalid_request(stub, existing):
    got = expect_failure(stub.Fetch, _fetch_request(existing, max_wait_ms=-1), INVALID_ARGUMENT, "INVALID_REQUEST")
    assert got.metadata["field"] == "max_wait_ms"


@pytest.mark.parametrize("field", ["min_bytes", "max_bytes", "partition_max_bytes"])
def test_fetch_with_a_negative_byte_limit_is_invalid_request(stub, existing, field):
    request = _fetch_request(existing)
    if field == "partition_max_bytes":
        request.partitions[0].max_bytes = -1
    else:
        setattr(request, field, -1)

    expect_failure(stub.Fetch, request, INVALID_ARGUMENT, "INVALID_REQUEST")


def test_list_offsets_of_a_negative_partition_is_invalid_request(stub, existing):
    request = records_pb2.ListOffsetsRequest(
        partitions=[records_pb2.ListOffsetsPartition(topic=existing, partition=-3)]
    )
    expect_failure(stub.ListOffsets, request, INVALID_ARGUMENT, "INVALID_REQUEST")


def test_subscribe_to_a_negative_partition_is_invalid_request(stub, existing):
    err = _subscribe_error(stub, records_pb2.SubscribeRequest(topic=existing, partition=-1))
    _assert_status(err, INVALID_ARGUMENT, "INVALID_REQUEST")


def test_subscribe_from_a_negative_offset_is_invalid_request(stub, existing):
    err = _subscribe_error(
        stub, records_pb2.SubscribeRequest(topic=existing, start=records_pb2.START_OFFSET, offset=-1)
    )
    _assert_status(err, INVALID_ARGUMENT, "INVALID_REQUEST")


def test_an_unknown_enum_value_is_invalid_request(stub, existing):
    got = expect_failure(
        stub.Produce, produce_request(existing, batch([b"x"]), acks=42), INVALID_ARGUMENT, "INVALID_REQUEST"
    )
    assert got.metadata["field"] == "acks"
    assert log_ends(stub, existing) == [3, 3]


def test_list_offsets_without_partitions_is_invalid_request(stub):
    expect_failure(stub.ListOffsets, records_pb2.ListOffsetsRequest(), INVALID_ARGUMENT, "INVALID_REQUEST")


def test_produce_without_partitions_is_invalid_request(stub):
    expect_failure(stub.Produce, records_pb2.ProduceRequest(), INVALID_ARGUMENT, "INVALID_REQUEST")


def test_fetch_without_partitions_is_invalid_request(stub):
    expect_failure(stub.Fetch, records_pb2.FetchRequest(), INVALID_ARGUMENT, "INVALID_REQUEST")


def test_creating_a_topic_with_no_partitions_is_invalid_request(stub, topic):
    expect_failure(
        stub.CreateTopic, admin_pb2.CreateTopicRequest(name=topic, partitions=0), INVALID_ARGUMENT, "INVALID_REQUEST"
    )


# -- limits -------------------------------------------------------------------------------------------


def _open_subscription(stub, topic):
    call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic), timeout=3 * TIMEOUT_S)
    next(call)  # delivered: the subscription is open server-side
    return call


def test_subscriptions_beyond_the_per_connection_limit_are_resource_exhausted(limited_broker, existing):
    with (
        connect(limited_broker.address, own_connection=True) as own,
        connect(limited_broker.address, own_connection=True) as other,
    ):
        calls = [_open_subscription(own, existing) for _ in range(MAX_SUBSCRIPTIONS)]
        try:
            err = _subscribe_error(own, records_pb2.SubscribeRequest(topic=existing))
            calls.append(_open_subscription(other, existing))  # another connection has its own
        finally:
            for call in calls:
                call.cancel()

    got = _assert_status(err, grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED")
    assert (got.metadata["limit_name"], got.metadata["limit"]) == (
        "max_subscriptions_per_connection", str(MAX_SUBSCRIPTIONS)
    )


def test_a_closed_subscription_frees_its_place(limited_broker, existing):
    with connect(limited_broker.address, own_connection=True) as own:
        calls = [_open_subscription(own, existing) for _ in range(MAX_SUBSCRIPTIONS)]
        calls.pop().cancel()
        reopened = None
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while reopened is None and time.monotonic() < deadline:
                try:
                    reopened = _open_subscription(own, existing)
                except grpc.RpcError as err:
                    assert failure(err).reason == "LIMIT_EXCEEDED"
                    time.sleep(0.05)
        finally:
            for call in [*calls, reopened]:
                if call is not None:
                    call.cancel()

    assert reopened is not None


# -- and then -------------------------------------------------------------------------------------


def test_the_server_still_serves_after_every_bad_input(stub, limited_broker, existing):
    assert limited_broker.running
    result = produce(stub, existing, [b"still-here"])

    assert result.base_offset == 3
    assert values(read_all(stub, existing)) == values_of("p0", 3) + [b"still-here"]
