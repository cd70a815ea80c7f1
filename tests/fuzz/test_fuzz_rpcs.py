"""Bad input against one broker: every RPC of the service (enumerated from the proto descriptor,
so a new one is fuzzed too) with random field values and with random bytes as the serialized
request; oversized messages; damaged record batches; invalid names.

Every call either succeeds or fails with a status and ``ErrorInfo`` reason from the README's
Errors table — never INTERNAL or UNKNOWN — and so does every per-partition ``ErrorDetail`` in a
response. Refused input changes nothing: the partition's log end and its files' sizes, the data
directory's entries. The broker serves normally afterwards.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import zstandard
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstore.api.v1 import admin_pb2, common_pb2, groups_pb2, records_pb2, transactions_pb2
from logstore.records import encode_batch
from logstore.records.layout import (
    CRC_POSITION,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    MAGIC,
    RECORD_COUNT_POSITION,
)
from tests.broker_fixture import ROOT, BrokerProcess
from tests.fuzz import counter
from tests.fuzz.protofuzz import (
    GROUPS,
    INVALID_NAMES,
    KEEP,
    SCRATCH,
    SERVICE,
    Outcome,
    call,
    error_details,
    method,
    raw_requests,
    requests,
)
from tests.server.helpers import (
    TIMEOUT_S,
    connect,
    create_topic,
    failure,
    produce,
    read_all,
    values,
)

MAX_REQUEST_BYTES = 1 << 20
EXAMPLES_PER_RPC = int(os.environ.get("LOGSTORE_FUZZ_EXAMPLES", "20"))
RAW_EXAMPLES_PER_RPC = max(EXAMPLES_PER_RPC // 2, 1)
FUZZ = settings(
    max_examples=EXAMPLES_PER_RPC,
    deadline=None,
    derandomize=os.environ.get("LOGSTORE_FUZZ_RANDOM") != "1",  # CI: the same cases every run
    database=None,
    suppress_health_check=list(HealthCheck),
)


def documented_errors() -> set[tuple[str, str]]:
    """(gRPC code, reason) pairs of the README's Errors table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"[A-Z_]+", cells[1]):
            for reason in re.findall(r"`([A-Z_]+)`", cells[0]):
                pairs.add((cells[1], reason))
    return pairs


DOCUMENTED = documented_errors()


def test_the_readme_documents_the_errors_the_fuzzer_expects():
    assert ("INVALID_ARGUMENT", "CORRUPT_BATCH") in DOCUMENTED
    assert ("INVALID_ARGUMENT", "INVALID_NAME") in DOCUMENTED
    assert ("RESOURCE_EXHAUSTED", "LIMIT_EXCEEDED") in DOCUMENTED


# -- the broker ---------------------------------------------------------------------------------------


@dataclass
class Fuzzed:
    broker: BrokerProcess
    channel: grpc.Channel
    keep_values: list[bytes]
    producer: tuple[int, int]  # the producer id and epoch of transactional id "fz-tx"

    def call(self, name: str, payload: bytes | list[bytes], kind: str, stream_timeout: float = 0.3) -> Outcome:
        counter.CASES[kind] += 1
        return call(self.channel, method(name), payload, stream_timeout=stream_timeout)

    def check(self, name: str, outcome: Outcome) -> None:
        """Succeeded, or failed with a documented status and reason; same for ErrorDetails."""
        if outcome.error is not None:
            got = failure(outcome.error)
            if got.code is grpc.StatusCode.DEADLINE_EXCEEDED and method(name).server_streaming:
                return  # an open subscription with nothing (more) to deliver: we stopped reading
            assert got.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (name, got)
            assert (got.code.name, got.reason) in DOCUMENTED, (name, got)
        for response in outcome.responses:
            for detail in error_details(response):
                code = grpc.StatusCode(_code_by_number(detail.code)).name
                assert (code, detail.reason) in DOCUMENTED, (name, detail)
        assert self.broker.running, self.broker.log()

    def keep_state(self) -> tuple[list[int], dict[str, int]]:
        """KEEP's log ends and the sizes of its segment files."""
        with connect(self.broker.address) as stub:
            description = stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name=KEEP), timeout=TIMEOUT_S)
        sizes = {
            str(path.relative_to(self.broker.data_dir)): path.stat().st_size
            for path in self.broker.data_dir.glob(f"{KEEP}-*/*")
            if path.suffix in (".log", ".index", ".timeindex")
        }
        return [p.log_end_offset for p in description.partitions], sizes


def _code_by_number(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    raise AssertionError(f"no gRPC status code {number}")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "logstore.toml"
    config.write_text(
        "[limits]\n"
        f"max_request_bytes = {MAX_REQUEST_BYTES}\n"
        "max_topics = 64\n"
        "max_partitions_per_topic = 8\n"
        "max_wait_ms = 100\n"  # fuzzed long polls stay short
        "backpressure_timeout_ms = 2000\n"
    )
    broker = BrokerProcess(root / "data", config=config).start()
    try:
        with connect(broker.address) as stub:
            create_topic(stub, KEEP, partitions=2)
            for name in SCRATCH[:2]:  # the third is left for CreateTopic to make
                create_topic(stub, name, partitions=2)
            keep_values = [f"keep-{i}".encode() for i in range(6)]
            produce(stub, KEEP, keep_values[:3], partition=0)
            produce(stub, KEEP, keep_values[3:], partition=1)
            stub.CommitOffsets(
                groups_pb2.CommitOffsetsRequest(
                    group_id=GROUPS[0], offsets=[groups_pb2.OffsetCommit(topic=KEEP, partition=0, offset=1)]
                ),
                timeout=TIMEOUT_S,
            )
            initialized = stub.InitProducerId(
                transactions_pb2.InitProducerIdRequest(transactional_id="fz-tx"), timeout=TIMEOUT_S
            )
        with grpc.insecure_channel(broker.address) as channel:
            yield Fuzzed(broker, channel, keep_values, (initialized.producer_id, initialized.producer_epoch))
        _assert_still_serving(broker, keep_values)
    finally:
        broker.kill()


def _assert_still_serving(broker: BrokerProcess, keep_values: list[bytes]) -> None:
    assert broker.running, broker.log()
    with connect(broker.address) as stub:
        assert values(read_all(stub, KEEP, 0))[:3] == keep_values[:3]
        assert values(read_all(stub, KEEP, 1))[:3] == keep_values[3:]
        name = "fz-after"
        create_topic(stub, name)
        assert produce(stub, name, [b"still"]).base_offset == 0
        assert values(read_all(stub, name)) == [b"still"]
    assert "Traceback" not in broker.log_path.read_text()


METHOD_NAMES = [m.name for m in SERVICE.methods]


def test_every_rpc_of_the_service_is_fuzzed():
    assert len(METHOD_NAMES) == 34  # the service's RPCs, as the proto declares them today


# -- random fields and random bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_random_field_values(fuzzed, name):
    @FUZZ
    @given(requests(method(name)))
    def run(payload: bytes | list[bytes]) -> None:
        fuzzed.check(name, fuzzed.call(name, payload, "fields"))

    run()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_random_bytes_as_the_serialized_request(fuzzed, name):
    @settings(FUZZ, max_examples=RAW_EXAMPLES_PER_RPC)
    @given(raw_requests(method(name)))
    def run(payload: bytes | list[bytes]) -> None:
        fuzzed.check(name, fuzzed.call(name, payload, "raw bytes"))

    run()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_an_oversized_message_is_resource_exhausted(fuzzed, name):
    payload = b"\x0a" + b"\xff\xff\x3f" + b"n" * MAX_REQUEST_BYTES  # field 1, ~1 MiB string
    payload_or_stream = [payload] if method(name).client_streaming else payload
    outcome = fuzzed.call(name, payload_or_stream, "oversized", stream_timeout=TIMEOUT_S)

    assert outcome.error is not None
    got = failure(outcome.error)
    # gRPC refuses it before the broker reads it, so there is no ErrorInfo (see the README)
    assert got.code is grpc.StatusCode.RESOURCE_EXHAUSTED, got
    assert "larger than max" in got.message, got
    assert fuzzed.broker.running


# -- damaged record batches -------------------------------------------------------------------------------


def _with_field(data: bytes, position: int, fmt: str, value: int, *, fix_crc: bool = True) -> bytes:
    edited = data[:position] + struct.pack(fmt, value) + data[position + struct.calcsize(fmt) :]
    if fix_crc:
        edited = edited[:CRC_POSITION] + struct.pack("<I", crc32c(edited[CRC_START:])) + edited[CRC_POSITION + 4 :]
    return edited


def _good() -> bytes:
    return encode_batch([b"v0", b"v1", b"v2", b"v3"])


def _zstd_bomb() -> bytes:
    """A zstd batch of 4 records whose few KiB claim 65 MiB once decompressed (the limit is
    64 MiB, or 64 times the compressed size)."""
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (65 << 20))
    data = encode_batch([b"a", b"b", b"c", b"d"], codec="zstd")
    head = bytearray(data[:HEADER_SIZE] + bomb)
    struct.pack_into("<i", head, 8, len(head))
    return _with_field(bytes(head), 8, "<i", len(head))


CORRUPT_BATCHES: dict[str, Callable[[], bytes]] = {
    "wrong-crc": lambda: _with_field(_good(), CRC_POSITION, "<I", 0xDEADBEEF, fix_crc=False),
    "flipped-record-byte": lambda: _good()[:-2] + bytes([_good()[-2] ^ 1]) + _good()[-1:],
    "length-past-the-payload": lambda: _with_field(_good(), 8, "<i", len(_good()) + 100, fix_crc=False),
    "length-short-of-the-batch": lambda: _with_field(_good(), 8, "<i", len(_good()) - 8, fix_crc=False),
    "length-inside-the-header": lambda: _with_field(_good(), 8, "<i", 12, fix_crc=False),
    "negative-length": lambda: _with_field(_good(), 8, "<i", -1, fix_crc=False),
    "negative-record-count": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", -1),
    "huge-record-count": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", (1 << 31) - 1),
    "record-count-too-small": lambda: _with_field(_good(), RECORD_COUNT_POSITION, "<i", 2),
    "negative-last-offset-delta": lambda: _with_field(_good(), 24, "<i", -5),
    "huge-last-offset-delta": lambda: _with_field(_good(), 24, "<i", (1 << 31) - 1),
    "bad-magic": lambda: _with_field(_good(), 20, "<B", 9),
    "unknown-attributes": lambda: _with_field(_good(), 22, "<H", 0x8000),
    "zero-records": lambda: _with_field(
        HEADER_STRUCT.pack(0, HEADER_SIZE, 0, 0, MAGIC, 0, 0, 0, 0, 1000, 1000, -1, -1, 0, -1), 0, "<q", 0
    ),
    "zstd-bomb": _zstd_bomb,
    "truncated-header": lambda: _good()[: HEADER_SIZE - 1],
    "truncated-records": lambda: _good()[:-3],
    "trailing-garbage": lambda: _good() + b"\x01\x02\x03",
    "good-then-bad": lambda: _good() + _with_field(_good(), CRC_POSITION, "<I", 1, fix_crc=False),
    "empty": lambda: b"",
}


def _produce_payload(records: bytes, partition: int = 0) -> bytes:
    return records_pb2.ProduceRequest(
        partitions=[records_pb2.PartitionRecords(topic=KEEP, partition=partition, records=records)]
    ).SerializeToString()


@pytest.mark.parametrize("kind", list(CORRUPT_BATCHES))
def test_a_damaged_batch_is_corrupt_batch_and_changes_nothing(fuzzed, kind):
    before = fuzzed.keep_state()
    payload = _produce_payload(CORRUPT_BATCHES[kind]())

    unary = fuzzed.call("Produce", payload, "damaged batch")
    streamed = fuzzed.call("ProduceStream", [payload, payload], "damaged batch")

    assert unary.error is not None
    got = failure(unary.error)
    assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_BATCH"), got
    assert (got.metadata["topic"], got.metadata["partition"]) == (KEEP, "0")
    assert streamed.error is None and len(streamed.responses) == 2  # the stream stays open
    assert {(r.error.code, r.error.reason) for r in streamed.responses} == {(3, "CORRUPT_BATCH")}
    assert fuzzed.keep_state() == before


def test_random_damage_to_a_batch_is_refused_unless_it_misses_what_the_broker_checks(fuzzed):
    """Bytes 0-7 (base_offset) and 12-15 (leader_epoch) are the broker's to assign: damage there is
    overwritten. Anything else — the length, the crc, and every byte the crc covers — is caught."""
    data = encode_batch([b"x" * 40, b"y" * 3, None], keys=[b"k", None, b"kk"])

    @settings(FUZZ, max_examples=60)
    @given(st.integers(0, len(data) - 1), st.integers(1, 255))
    def run(position: int, flip: int) -> None:
        damaged = bytearray(data)
        damaged[position] ^= flip
        before = fuzzed.keep_state()
        outcome = fuzzed.call("Produce", _produce_payload(bytes(damaged)), "damaged batch")
        if position < 8 or 12 <= position < 16:
            assert outcome.error is None, failure(outcome.error)
            (result,) = outcome.responses[0].results
            assert not result.HasField("error") and result.last_offset - result.base_offset == 2
        else:
            assert outcome.error is not None
            assert failure(outcome.error).reason == "CORRUPT_BATCH"
            assert fuzzed.keep_state() == before

    run()


# -- invalid names ------------------------------------------------------------------------------------


def _name_cases(fuzzed_producer: tuple[int, int]) -> dict[str, tuple[str, Callable[[str], Any], str]]:
    """case -> (RPC, request for a name, where the error is: "status" or "partition")."""
    producer_id, epoch = fuzzed_producer
    tp = common_pb2.TopicPartition
    return {
        "CreateTopic": ("CreateTopic", lambda n: admin_pb2.CreateTopicRequest(name=n, partitions=1), "status"),
        "DeleteTopic": ("DeleteTopic", lambda n: admin_pb2.DeleteTopicRequest(name=n), "status"),
        "DescribeTopic": ("DescribeTopic", lambda n: admin_pb2.DescribeTopicRequest(name=n), "status"),
        "AlterTopicConfig": ("AlterTopicConfig", lambda n: admin_pb2.AlterTopicConfigRequest(name=n), "status"),
        "AddPartitions": ("AddPartitions", lambda n: admin_pb2.AddPartitionsRequest(name=n, total=2), "status"),
        "Produce": ("Produce", lambda n: records_pb2.ProduceRequest(
            partitions=[records_pb2.PartitionRecords(topic=n, records=_good())]), "status"),
        "ProduceStream": ("ProduceStream", lambda n: records_pb2.ProduceRequest(
            partitions=[records_pb2.PartitionRecords(topic=n, records=_good())]), "stream"),
        "Fetch.topic": ("Fetch", lambda n: records_pb2.FetchRequest(
            partitions=[records_pb2.FetchPartition(topic=n)]), "partition"),
        "Fetch.group_id": ("Fetch", lambda n: records_pb2.FetchRequest(
            partitions=[records_pb2.FetchPartition(topic=KEEP)], group_id=n), "status"),
        "Subscribe": ("Subscribe", lambda n: records_pb2.SubscribeRequest(topic=n), "status"),
        "ListOffsets": ("ListOffsets", lambda n: records_pb2.ListOffsetsRequest(
            partitions=[records_pb2.ListOffsetsPartition(topic=n)]), "partition"),
        "GroupHeartbeat.group_id": ("GroupHeartbeat", lambda n: groups_pb2.GroupHeartbeatRequest(
            group_id=n, topics=[KEEP]), "status"),
        "GroupHeartbeat.topics": ("GroupHeartbeat", lambda n: groups_pb2.GroupHeartbeatRequest(
            group_id="fz-names", topics=[n]), "status"),
        "CommitOffsets.group_id": ("CommitOffsets", lambda n: groups_pb2.CommitOffsetsRequest(
            group_id=n, offsets=[groups_pb2.OffsetCommit(topic=KEEP, offset=0)]), "status"),
        "CommitOffsets.topic": ("CommitOffsets", lambda n: groups_pb2.CommitOffsetsRequest(
            group_id="fz-names", offsets=[groups_pb2.OffsetCommit(topic=n, offset=0)]), "partition"),
        "FetchOffsets.group_id": ("FetchOffsets", lambda n: groups_pb2.FetchOffsetsRequest(group_id=n), "status"),
        "FetchOffsets.topic": ("FetchOffsets", lambda n: groups_pb2.FetchOffsetsRequest(
            group_id=GROUPS[0], partitions=[tp(topic=n)]), "partition"),
        "DescribeGroup": ("DescribeGroup", lambda n: groups_pb2.DescribeGroupRequest(group_id=n), "status"),
        "DeleteGroup": ("DeleteGroup", lambda n: groups_pb2.DeleteGroupRequest(group_id=n), "status"),
        "ResetOffsets.group_id": ("ResetOffsets", lambda n: groups_pb2.ResetOffsetsRequest(
            group_id=n, topic=KEEP, dry_run=True), "status"),
        "ResetOffsets.topic": ("ResetOffsets", lambda n: groups_pb2.ResetOffsetsRequest(
            group_id=GROUPS[0], topic=n, dry_run=True), "status"),
        "InitProducerId": ("InitProducerId", lambda n: transactions_pb2.InitProducerIdRequest(
            transactional_id=n), "status"),
        "AddPartitionsToTxn.transactional_id": ("AddPartitionsToTxn", lambda n: transactions_pb2.AddPartitionsToTxnRequest(
            transactional_id=n, producer_id=producer_id, producer_epoch=epoch, partitions=[tp(topic=KEEP)]), "status"),
        "AddPartitionsToTxn.topic": ("AddPartitionsToTxn", lambda n: transactions_pb2.AddPartitionsToTxnRequest(
            transactional_id="fz-tx", producer_id=producer_id, producer_epoch=epoch, partitions=[tp(topic=n)]), "status"),
        "TxnOffsetCommit.group_id": ("TxnOffsetCommit", lambda n: transactions_pb2.TxnOffsetCommitRequest(
            transactional_id="fz-tx", producer_id=producer_id, producer_epoch=epoch, group_id=n,
            offsets=[groups_pb2.OffsetCommit(topic=KEEP, offset=0)]), "status"),
        "TxnOffsetCommit.transactional_id": ("TxnOffsetCommit", lambda n: transactions_pb2.TxnOffsetCommitRequest(
            transactional_id=n, producer_id=producer_id, producer_epoch=epoch, group_id=GROUPS[0],
            offsets=[groups_pb2.OffsetCommit(topic=KEEP, offset=0)]), "status"),
        "TxnOffsetCommit.topic": ("TxnOffsetCommit", lambda n: transactions_pb2.TxnOffsetCommitRequest(
            transactional_id="fz-tx", producer_id=producer_id, producer_epoch=epoch, group_id=GROUPS[0],
            offsets=[groups_pb2.OffsetCommit(topic=n, offset=0)]), "status"),
        "EndTxn": ("EndTxn", lambda n: transactions_pb2.EndTxnRequest(
            transactional_id=n, producer_id=producer_id, producer_epoch=epoch), "status"),
    }


NAME_CASES = list(_name_cases((0, 0)))
#: Where an empty string means "not set": no group (Fetch), an idempotent producer (InitProducerId).
EMPTY_MEANS_UNSET = {"Fetch.group_id", "InitProducerId"}


def _tree(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if ".tmp" not in p.name}


@pytest.mark.parametrize("case", NAME_CASES)
def test_an_invalid_name_is_invalid_name_and_reaches_no_file(fuzzed, case):
    rpc, build, where = _name_cases(fuzzed.producer)[case]
    data_dir = fuzzed.broker.data_dir
    outside = _tree(data_dir.parent)
    for label, name in INVALID_NAMES.items():
        if not name and case in EMPTY_MEANS_UNSET:
            continue
        request = build(name).SerializeToString()
        outcome = fuzzed.call(rpc, [request] if where == "stream" else request, "invalid name")
        if where == "status":
            assert outcome.error is not None, (label, outcome.responses)
            got = failure(outcome.error)
            assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"), (label, got)
        else:
            assert outcome.error is None, (label, failure(outcome.error))
            details = [d for r in outcome.responses for d in error_details(r)]
            assert [(d.code, d.reason) for d in details] == [(3, "INVALID_NAME")], (label, details)
    assert _tree(data_dir.parent) == outside  # nothing created or removed, inside or beside
