"""Raw-stub helpers for the end-to-end server suite: no logstore client, just the generated stubs,
``encode_batch`` to build what a producer sends and ``decode_records`` to read what comes back.

Every call carries a deadline (``TIMEOUT_S``) and every loop is bounded, so a hung broker fails
a test instead of hanging the suite.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from logstore.api.v1 import admin_pb2, logstore_pb2_grpc, records_pb2
from logstore.records import Record, decode_records, encode_batch

#: Deadline of every unary call in the suite.
TIMEOUT_S = 10.0
DOMAIN = "logstore.dev"

_counter = itertools.count()


def unique_topic(hint: str = "t") -> str:
    """A topic name no other test uses: the hint (sanitised), a counter and a random suffix."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", hint)[:60].strip("-.") or "t"
    return f"{cleaned}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


@contextmanager
def connect(address: str, *, own_connection: bool = False) -> Iterator[logstore_pb2_grpc.LogStoreStub]:
    """A stub on a new channel. Channels with equal arguments share one TCP connection (gRPC's
    global subchannel pool) unless ``own_connection``."""
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    with grpc.insecure_channel(address, options=options) as channel:
        yield logstore_pb2_grpc.LogStoreStub(channel)


# -- errors -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RpcFailure:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    message: str


def failure(err: grpc.RpcError) -> RpcFailure:
    """The status code and the ErrorInfo (domain logstore.dev) of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    code = err.code()  # type: ignore[attr-defined]
    if status is None:
        return RpcFailure(code, "", {}, err.details() or "")  # type: ignore[attr-defined]
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1, f"expected one ErrorInfo in {status}"
    assert infos[0].domain == DOMAIN
    return RpcFailure(code, infos[0].reason, dict(infos[0].metadata), status.message)


def expect_failure(call, request, code: grpc.StatusCode, reason: str | None = None) -> RpcFailure:  # type: ignore[no-untyped-def]
    """Make a unary call that must fail with ``code`` (and ErrorInfo ``reason``)."""
    try:
        response = call(request, timeout=TIMEOUT_S)
    except grpc.RpcError as err:
        got = failure(err)
    else:
        raise AssertionError(f"expected {code.name}/{reason}, got a response: {response}")
    assert got.code == code, got
    if reason is not None:
        assert got.reason == reason, got
    return got


# -- topics -----------------------------------------------------------------------------------------


def create_topic(
    stub: logstore_pb2_grpc.LogStoreStub, name: str, partitions: int = 1, **config: str
) -> admin_pb2.TopicDescription:
    return stub.CreateTopic(
        admin_pb2.CreateTopicRequest(name=name, partitions=partitions, config=config),
        timeout=TIMEOUT_S,
    )


def describe(stub: logstore_pb2_grpc.LogStoreStub, name: str) -> admin_pb2.TopicDescription:
    return stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name=name), timeout=TIMEOUT_S)


def log_end(stub: logstore_pb2_grpc.LogStoreStub, topic: str, partition: int = 0) -> int:
    return describe(stub, topic).partitions[partition].log_end_offset


def log_ends(stub: logstore_pb2_grpc.LogStoreStub, topic: str) -> list[int]:
    return [p.log_end_offset for p in describe(stub, topic).partitions]


# -- produce ----------------------------------------------------------------------------------------


def values_of(prefix: str, count: int, start: int = 0) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(start, start + count)]


def batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    timestamps: Sequence[int] | int | None = None,
) -> bytes:
    return encode_batch(values, keys=keys, timestamps=timestamps)


def produce_request(
    topic: str,
    records: bytes,
    partition: int = 0,
    acks: int = records_pb2.ACKS_ALL,
    correlation_id: int = 0,
) -> records_pb2.ProduceRequest:
    return records_pb2.ProduceRequest(
        acks=acks,
        correlation_id=correlation_id,
        partitions=[records_pb2.PartitionRecords(topic=topic, partition=partition, records=records)],
    )


def produce(
    stub: logstore_pb2_grpc.LogStoreStub,
    topic: str,
    values: Sequence[bytes | None],
    partition: int = 0,
    *,
    keys: Sequence[bytes | None] | None = None,
    timestamps: Sequence[int] | int | None = None,
    acks: int = records_pb2.ACKS_ALL,
) -> records_pb2.PartitionProduceResult:
    """Produce one batch and return its (error-free) result."""
    response = stub.Produce(
        produce_request(topic, batch(values, keys, timestamps), partition, acks), timeout=TIMEOUT_S
    )
    assert len(response.results) == 1
    result = response.results[0]
    assert not result.HasField("error"), result.error
    return result


# -- fetch ------------------------------------------------------------------------------------------


def fetch_partition(
    stub: logstore_pb2_grpc.LogStoreStub,
    topic: str,
    partition: int = 0,
    offset: int = 0,
    *,
    max_wait_ms: int = 0,
    max_bytes: int = 0,
) -> records_pb2.FetchedPartition:
    response = stub.Fetch(
        records_pb2.FetchRequest(
            partitions=[records_pb2.FetchPartition(topic=topic, partition=partition, offset=offset)],
            max_wait_ms=max_wait_ms,
            max_bytes=max_bytes,
        ),
        timeout=TIMEOUT_S + max_wait_ms / 1000,
    )
    assert len(response.partitions) == 1
    return response.partitions[0]


def read_all(
    stub: logstore_pb2_grpc.LogStoreStub,
    topic: str,
    partition: int = 0,
    offset: int = 0,
    *,
    max_bytes: int = 0,
    max_fetches: int = 10_000,
) -> list[Record]:
    """Every record from ``offset`` to the log end, fetching until next_offset reaches it."""
    records: list[Record] = []
    for _ in range(max_fetches):
        fetched = fetch_partition(stub, topic, partition, offset, max_bytes=max_bytes)
        assert not fetched.HasField("error"), fetched.error
        records += [r for r in decode_records(fetched.records) if r.offset >= offset]
        if fetched.next_offset >= fetched.high_watermark:
            return records
        assert fetched.next_offset > offset, "a fetch below the log end made no progress"
        offset = fetched.next_offset
    raise AssertionError(f"{topic}/{partition} not read to its end in {max_fetches} fetches")


def wait_until(predicate, timeout: float = TIMEOUT_S, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def values(records: Sequence[Record]) -> list[bytes | None]:
    return [r.value for r in records]

