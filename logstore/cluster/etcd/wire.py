"""Conversions between the client's dataclasses and the generated etcd messages (etcd_pb2).

The only module besides the client itself that touches protobuf; nothing here leaves the package.
"""

from __future__ import annotations

from collections.abc import Sequence

from logstore.cluster.etcd import etcd_pb2 as pb
from logstore.cluster.etcd.kv import EventType, KeyValue, MemberStatus, WatchEvent
from logstore.cluster.etcd.txn import Compare, Op, OpResult, TxnResult

_TARGETS = {
    "version": pb.Compare.VERSION,
    "create_revision": pb.Compare.CREATE,
    "mod_revision": pb.Compare.MOD,
    "value": pb.Compare.VALUE,
}
_RESULTS = {
    "==": pb.Compare.EQUAL,
    "!=": pb.Compare.NOT_EQUAL,
    "<": pb.Compare.LESS,
    ">": pb.Compare.GREATER,
}


def key_value(message: pb.KeyValue) -> KeyValue:
    return KeyValue(
        key=message.key,
        value=message.value,
        create_revision=message.create_revision,
        mod_revision=message.mod_revision,
        version=message.version,
        lease=message.lease,
    )


def compare(item: Compare) -> pb.Compare:
    message = pb.Compare(result=_RESULTS[item.result], target=_TARGETS[item.target], key=item.key)
    setattr(message, item.target, item.operand)
    return message


def request_op(op: Op) -> pb.RequestOp:
    if op.kind == "put":
        return pb.RequestOp(request_put=pb.PutRequest(key=op.key, value=op.value, lease=op.lease_id))
    if op.kind == "get":
        return pb.RequestOp(request_range=pb.RangeRequest(key=op.key, range_end=op.range_end))
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=op.key, range_end=op.range_end))


def txn_request(
    compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
) -> pb.TxnRequest:
    return pb.TxnRequest(
        compare=[compare(item) for item in compares],
        success=[request_op(op) for op in success],
        failure=[request_op(op) for op in failure],
    )


def op_result(message: pb.ResponseOp) -> OpResult:
    which = message.WhichOneof("response")
    if which == "response_range":
        return OpResult("get", kvs=tuple(key_value(kv) for kv in message.response_range.kvs))
    if which == "response_delete_range":
        return OpResult("delete", deleted=message.response_delete_range.deleted)
    return OpResult("put")


def txn_result(message: pb.TxnResponse) -> TxnResult:
    return TxnResult(
        succeeded=message.succeeded,
        responses=tuple(op_result(item) for item in message.responses),
        revision=message.header.revision,
    )


def watch_event(message: pb.Event) -> WatchEvent:
    kind = EventType.DELETE if message.type == pb.Event.DELETE else EventType.PUT
    return WatchEvent(type=kind, kv=key_value(message.kv), revision=message.kv.mod_revision)


def member_status(endpoint: str, message: pb.StatusResponse) -> MemberStatus:
    return MemberStatus(
        endpoint=endpoint,
        member_id=message.header.member_id,
        leader_id=message.leader,
        raft_term=message.raft_term,
        raft_index=message.raft_index,
        revision=message.header.revision,
        version=message.version,
        errors=tuple(message.errors),
    )
