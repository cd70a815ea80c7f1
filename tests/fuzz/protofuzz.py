"""Hypothesis strategies for any protobuf request message, built from its descriptor, and a
generic caller for the LogStore service (identity serializers: bytes in, bytes out).

Field values are mixed from "interesting" pools and the field type's whole range: names that
exist, names that do not, names that are invalid (``../x``, empty, 300 characters, NUL, unicode,
``a/b``); small and extreme integers; known and unknown enum numbers; record payloads that are
valid batches, damaged batches or random bytes. A new field or a new RPC is fuzzed without any
change here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from crc32c import crc32c
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

from logstore.api.v1 import logstore_pb2
from logstore.records import encode_batch
from logstore.records.layout import CRC_POSITION, CRC_START
from logstore.storage import LogConfig

SERVICE = logstore_pb2.DESCRIPTOR.services_by_name["LogStore"]

KEEP = "fz-keep"  # a topic with records that no fuzzed call may delete or reconfigure
SCRATCH = ["fz-a", "fz-b", "fz-c"]  # topics fuzzed admin calls may create, alter and delete
UNKNOWN = ["fz-unknown", "__fz-internal-looking"]
INVALID_NAMES = {
    "dot-dot-slash": "../x",
    "empty": "",
    "300-chars": "a" * 300,
    "nul": "a\x00b",
    "unicode": "t\u00f6pic",
    "slash": "a/b",
    "dot-dot": "..",
    "space": "a b",
}
GROUPS = ["fz-group", "fz-other"]
TRANSACTIONAL_IDS = ["fz-tx", "fz-tx2"]
#: RPCs that change or remove the topic they name: never pointed at KEEP.
DESTRUCTIVE = {"DeleteTopic", "AlterTopicConfig", "AddPartitions", "CreateTopic"}

INT_EDGES = {
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
}


def method(name: str) -> MethodDescriptor:
    return SERVICE.methods_by_name[name]


def message_class(descriptor: Descriptor) -> Any:
    return message_factory.GetMessageClass(descriptor)


# -- record payloads --------------------------------------------------------------------------------


def _recrc(data: bytes) -> bytes:
    return data[:CRC_POSITION] + struct.pack("<I", crc32c(data[CRC_START:])) + data[CRC_POSITION + 4 :]


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """A valid batch, maybe idempotent or transactional with made-up producer ids."""
    values = draw(st.lists(st.binary(max_size=24), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["plain", "plain", "idempotent", "transactional"]))
    if kind == "plain":
        return encode_batch(values)
    return encode_batch(
        values,
        producer_id=draw(st.sampled_from([0, 1, 999, 1 << 40])),
        producer_epoch=draw(st.sampled_from([0, 1, 32767])),
        base_sequence=draw(st.sampled_from([0, 1, 5, 1 << 30])),
        transactional=kind == "transactional",
    )


@st.composite
def damaged_batches(draw: st.DrawFn) -> bytes:
    """A valid batch with one byte flipped, or a header field set (crc fixed or not)."""
    data = bytearray(encode_batch(draw(st.lists(st.binary(max_size=16), min_size=1, max_size=3))))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data) - 1))
        data[position] ^= draw(st.integers(1, 255))
        return bytes(data)
    position, fmt = draw(st.sampled_from([(8, "<i"), (24, "<i"), (28, "<i"), (20, "<B"), (22, "<H")]))
    value = draw(st.sampled_from([-1, 0, 2, 1 << 20, (1 << 31) - 1, -(1 << 31)]))
    try:
        struct.pack_into(fmt, data, position, value)
    except struct.error:
        struct.pack_into(fmt, data, position, 0)
    return _recrc(bytes(data)) if draw(st.booleans()) else bytes(data)


# -- fields -------------------------------------------------------------------------------------------
#
# Each request is drawn either *plausible* (every field set, names that exist, small non-negative
# numbers, known enum values, valid batches: it gets past the early checks and reaches the
# broker's deeper paths) or *wild* (any subset of fields, each from everything above plus invalid
# and unknown names, extreme numbers, unknown enum values, damaged or random record bytes).


def _pick(wild: bool, plausible: st.SearchStrategy[Any], *odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(plausible, *odd) if wild else plausible


def _names(method_name: str, kind: str, wild: bool) -> st.SearchStrategy[str]:
    if kind == "topic":
        valid = SCRATCH + ([] if method_name in DESTRUCTIVE else [KEEP, KEEP, KEEP])
    elif kind == "group":
        valid = GROUPS
    else:
        valid = TRANSACTIONAL_IDS
    return _pick(
        wild, st.sampled_from(valid), st.sampled_from([*INVALID_NAMES.values(), *UNKNOWN]), st.text(max_size=12)
    )


def _string(method_name: str, f: FieldDescriptor, wild: bool) -> st.SearchStrategy[str]:
    if f.name in ("name", "topic", "topics"):
        return _names(method_name, "topic", wild)
    if f.name == "group_id":
        return _names(method_name, "group", wild)
    if f.name == "transactional_id":
        return _names(method_name, "transactional id", wild)
    if f.name == "reset":
        return _pick(wild, st.sampled_from(LogConfig.keys()), st.sampled_from(["no_such_key", ""]))
    if f.name == "assignor":
        return _pick(wild, st.sampled_from(["", "range", "roundrobin", "sticky"]), st.just("nope"))
    return _pick(wild, st.just(""), st.sampled_from(["m-1", "x" * 200]), st.text(max_size=10))


def _integer(f: FieldDescriptor, wild: bool) -> st.SearchStrategy[int]:
    low, high = INT_EDGES.get(f.type, (-(1 << 31), (1 << 31) - 1))
    return _pick(
        wild, st.integers(0, 3), st.sampled_from([low, high, max(low, -1), 1 << 20]), st.integers(low, high)
    )


def _map(wild: bool) -> st.SearchStrategy[dict[str, str]]:
    keys = _pick(wild, st.sampled_from(LogConfig.keys()), st.sampled_from(["no_such_key", "", "flush.interval.ms"]))
    values = _pick(
        wild,
        st.sampled_from(["1", "4096", "60000", "1mib", "always", "never", "compact", "delete"]),
        st.sampled_from(["-1", "0", "lots", "", "9" * 30]),
        st.text(max_size=6),
    )
    return st.dictionaries(keys, values, max_size=3)


def _scalar(method_name: str, f: FieldDescriptor, depth: int, wild: bool) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return _string(method_name, f, wild)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _pick(wild, batches(), damaged_batches(), st.binary(max_size=96), st.just(b""))
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return _pick(wild, st.sampled_from(known), st.integers(-(1 << 31), (1 << 31) - 1))
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(method_name, f.message_type, depth + 1, wild)
    if f.type in INT_EDGES:
        return _integer(f, wild)
    raise NotImplementedError(f"no strategy for field {f.full_name} of type {f.type}")


def _message(method_name: str, descriptor: Descriptor, depth: int, wild: bool) -> st.SearchStrategy[Any]:
    cls = message_class(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            fields[f.name] = _map(wild)
        elif f.is_repeated:
            items = _scalar(method_name, f, depth, wild)
            fields[f.name] = st.lists(items, min_size=0 if wild else 1, max_size=3 if depth < 2 else 0)
        else:
            fields[f.name] = _scalar(method_name, f, depth, wild)
    if wild:  # any subset of the fields; the others keep their defaults
        return st.fixed_dictionaries({}, optional=fields).map(lambda values: cls(**values))
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


def messages(method_name: str, descriptor: Descriptor) -> st.SearchStrategy[Any]:
    """Requests of ``descriptor``, plausible or wild (see above)."""
    return st.booleans().flatmap(lambda wild: _message(method_name, descriptor, 0, wild))


def requests(m: MethodDescriptor) -> st.SearchStrategy[bytes | list[bytes]]:
    """Serialized requests for ``m``: one, or a list of one to three for a client stream."""
    one = messages(m.name, m.input_type).map(lambda request: request.SerializeToString())
    return st.lists(one, min_size=1, max_size=3) if m.client_streaming else one


def raw_requests(m: MethodDescriptor) -> st.SearchStrategy[bytes | list[bytes]]:
    one = st.binary(max_size=200)
    return st.lists(one, min_size=1, max_size=3) if m.client_streaming else one


# -- calling ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a call came back with: the responses (parsed) and the error, if it failed."""

    responses: list[Any] = field(default_factory=list)
    error: grpc.RpcError | None = None


def call(
    channel: grpc.Channel, m: MethodDescriptor, payload: bytes | list[bytes], *,
    timeout: float = 10.0, stream_timeout: float = 0.3,
) -> Outcome:
    """Call ``m`` with serialized request bytes. A server stream is read until it ends, fails, or
    ``stream_timeout`` passes (an open subscription waiting for records: DEADLINE_EXCEEDED)."""
    path = f"/{SERVICE.full_name}/{m.name}"
    response_class = message_class(m.output_type)
    outcome = Outcome()
    try:
        if m.client_streaming and m.server_streaming:
            payloads = payload if isinstance(payload, list) else [payload]
            for raw in channel.stream_stream(path)(iter(payloads), timeout=timeout):
                outcome.responses.append(response_class.FromString(raw))
        elif m.server_streaming:
            for raw in channel.unary_stream(path)(payload, timeout=stream_timeout):
                outcome.responses.append(response_class.FromString(raw))
        else:
            outcome.responses.append(response_class.FromString(channel.unary_unary(path)(payload, timeout=timeout)))
    except grpc.RpcError as err:
        outcome.error = err
    return outcome


def error_details(response: Any) -> Iterator[Any]:
    """Every ErrorDetail set anywhere inside a response message."""
    for f, value in response.ListFields():
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        items = value if f.is_repeated else [value]
        for item in items:
            if f.message_type.GetOptions().map_entry:
                continue
            if f.message_type.full_name == "logstore.api.v1.ErrorDetail":
                yield item
            else:
                yield from error_details(item)
