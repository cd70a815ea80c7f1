"""Transactions: comparisons, operations and results, as frozen dataclasses (no protobuf).

A transaction runs atomically: when every ``Compare`` holds, the ``success`` operations run,
otherwise the ``failure`` ones; one revision for all its writes. Build comparisons by comparing a
target of a key with a value::

    Compare.create_revision("/k") == 0        # the key does not exist
    Compare.create_revision(key) == epoch     # the key is still the one created at ``epoch``
    Compare.mod_revision(key) < 42
    Compare.value(key) != b"x"
    Compare.version(key) > 1

Supported: ``==``, ``!=``, ``<``, ``>``. A missing key has create revision, mod revision and
version 0; its value compares as absent (a value comparison on a missing key is false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from logstore.cluster.etcd.kv import BytesLike, KeyValue, prefix_end, to_bytes

CompareTargetName = Literal["version", "create_revision", "mod_revision", "value"]
CompareResultName = Literal["==", "!=", "<", ">"]
OpKind = Literal["get", "put", "delete"]


class CompareTarget:
    """One target (``version``, ``create_revision``, ``mod_revision``, ``value``) of one key;
    comparing it with a value builds a ``Compare``."""

    __slots__ = ("key", "target")

    def __init__(self, key: bytes, target: CompareTargetName) -> None:
        self.key = key
        self.target: CompareTargetName = target

    def _build(self, result: CompareResultName, operand: object) -> Compare:
        if self.target == "value":
            if not isinstance(operand, str | bytes):
                raise TypeError(f"Compare.value needs bytes or str, not {type(operand).__name__}")
            return Compare(self.key, self.target, result, to_bytes(operand))
        if not isinstance(operand, int) or isinstance(operand, bool):
            raise TypeError(f"Compare.{self.target} needs an int, not {type(operand).__name__}")
        return Compare(self.key, self.target, result, operand)

    def __eq__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._build("==", operand)

    def __ne__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._build("!=", operand)

    def __lt__(self, operand: object) -> Compare:
        return self._build("<", operand)

    def __gt__(self, operand: object) -> Compare:
        return self._build(">", operand)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Compare:
    """``target`` of ``key`` ``result`` ``operand``, e.g. create_revision of b"/k" == 7."""

    key: bytes
    target: CompareTargetName
    result: CompareResultName
    operand: int | bytes

    @staticmethod
    def create_revision(key: BytesLike) -> CompareTarget:
        return CompareTarget(to_bytes(key), "create_revision")

    @staticmethod
    def mod_revision(key: BytesLike) -> CompareTarget:
        return CompareTarget(to_bytes(key), "mod_revision")

    @staticmethod
    def version(key: BytesLike) -> CompareTarget:
        return CompareTarget(to_bytes(key), "version")

    @staticmethod
    def value(key: BytesLike) -> CompareTarget:
        return CompareTarget(to_bytes(key), "value")


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction. ``range_end`` empty: ``key`` alone; else [key, range_end)."""

    kind: OpKind
    key: bytes
    value: bytes = b""
    lease_id: int = 0
    range_end: bytes = b""

    @staticmethod
    def put(key: BytesLike, value: BytesLike, lease_id: int = 0) -> Op:
        return Op("put", to_bytes(key), to_bytes(value), lease_id)

    @staticmethod
    def get(key: BytesLike, *, prefix: bool = False) -> Op:
        key_bytes = to_bytes(key)
        return Op("get", key_bytes, range_end=prefix_end(key_bytes) if prefix else b"")

    @staticmethod
    def delete(key: BytesLike, *, prefix: bool = False) -> Op:
        key_bytes = to_bytes(key)
        return Op("delete", key_bytes, range_end=prefix_end(key_bytes) if prefix else b"")


@dataclass(frozen=True, slots=True)
class OpResult:
    """What one operation gave: ``kvs`` for a get (sorted by key), ``deleted`` for a delete."""

    kind: OpKind
    kvs: tuple[KeyValue, ...] = ()
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``succeeded``: the comparisons held and the success operations ran. ``responses``: one per
    operation that ran, in order. ``revision``: the store's revision after the transaction."""

    succeeded: bool
    responses: tuple[OpResult, ...]
    revision: int
