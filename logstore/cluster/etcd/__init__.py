"""logstore's async etcd v3 client (see ``client`` for why it is ours, and docs/cluster.md).

Public API: ``EtcdClient``; the values it returns (``KeyValue``, ``WatchEvent``, ``EventType``,
``MemberStatus``, ``TxnResult``, ``OpResult``), the transaction builders (``Compare``, ``Op``), the
handles (``KeepAlive``, ``Watch``) and the errors. No protobuf type appears in any of them; the
generated ``etcd_pb2`` modules are private to this package.
"""

from logstore.cluster.etcd.client import EtcdClient
from logstore.cluster.etcd.errors import (
    EtcdCompactedError,
    EtcdError,
    EtcdLeaseNotFoundError,
    EtcdUnavailableError,
)
from logstore.cluster.etcd.kv import EventType, KeyValue, MemberStatus, WatchEvent, prefix_end
from logstore.cluster.etcd.lease import KeepAlive
from logstore.cluster.etcd.txn import Compare, Op, OpResult, TxnResult
from logstore.cluster.etcd.watch import Watch

__all__ = [
    "Compare",
    "EtcdClient",
    "EtcdCompactedError",
    "EtcdError",
    "EtcdLeaseNotFoundError",
    "EtcdUnavailableError",
    "EventType",
    "KeepAlive",
    "KeyValue",
    "MemberStatus",
    "Op",
    "OpResult",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "prefix_end",
]
