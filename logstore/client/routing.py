"""Calls that go where the cluster map says: ``RoutedStub`` and ``FanOutFuture``.

``RoutedStub(metadata, route)`` looks like a ``LogStoreStub`` (``stub.X(request, timeout=...)``
and ``stub.X.future(...)``), but every call first asks ``route()`` for an address (any broker,
the group's coordinator, ...) and goes to that broker's channel; a failure is shown to
``Metadata.observe`` (so the next call re-reads the map or tries the next broker) and then raised
unchanged, for the caller's own retry loop. On a single node ``route()`` is the bootstrap
address: one Python call more per unary call, nothing else.

``Fetches`` sends the consumer's ``Fetch`` calls: to the current address on a single node, split
per leader broker in a cluster, one call each, waited for together as a ``FanOutFuture`` (the
answers concatenated); if one fails, the whole fetch fails and is sent again from the same
offsets, so no record is skipped or repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from logstore.api.v1 import records_pb2
from logstore.client import wire
from logstore.client.channel import error_from_rpc
from logstore.client.metadata import GROUP, TRANSACTION, Metadata
from logstore.client.models import TopicPartition

FETCH = "/logstore.api.v1.LogStore/Fetch"


class RoutedStub:
    def __init__(self, metadata: Metadata, route: Callable[[], str]) -> None:
        self._metadata = metadata
        self._route = route

    def __getattr__(self, name: str) -> _RoutedMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return _RoutedMethod(self._metadata, self._route, name)


class _RoutedMethod:
    __slots__ = ("_metadata", "_route", "_name")

    def __init__(self, metadata: Metadata, route: Callable[[], str], name: str) -> None:
        self._metadata = metadata
        self._route = route
        self._name = name

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        address = self._route()
        try:
            return getattr(self._metadata.channels.stub(address), self._name)(request, **kwargs)
        except grpc.RpcError as exc:
            self._metadata.observe(error_from_rpc(exc, address), address)
            raise

    def future(self, request: Any, **kwargs: Any) -> Any:
        address = self._route()
        call = getattr(self._metadata.channels.stub(address), self._name).future(request, **kwargs)
        metadata = self._metadata

        def done(finished: Any) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                metadata.observe(error_from_rpc(finished.exception(), address), address)

        call.add_done_callback(done)
        return call


def any_broker(metadata: Metadata) -> RoutedStub:
    """Calls any live broker can answer (admin, metadata, offsets of a single node)."""
    return RoutedStub(metadata, metadata.address)


def group_coordinator(metadata: Metadata, group_id: str) -> RoutedStub:
    """Calls of a consumer group (heartbeats, offset commits and fetches)."""
    return RoutedStub(metadata, lambda: metadata.coordinator(GROUP, group_id))


def transaction_coordinator(metadata: Metadata, transactional_id: str) -> RoutedStub:
    """Calls of a transactional id (InitProducerId, TxnOffsetCommit, EndTxn); an idempotent
    producer without one asks any broker for its producer id."""
    if not transactional_id:
        return any_broker(metadata)
    return RoutedStub(metadata, lambda: metadata.coordinator(TRANSACTION, transactional_id))


class FanOutFuture:
    """Several gRPC futures of list results as one: ``result`` waits for all and concatenates
    them, raising the first failure (after every call has finished or been cancelled)."""

    def __init__(self, futures: list[Any]) -> None:
        self._futures = futures

    def result(self, timeout: float | None = None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[Any] = []
        failure: grpc.RpcError | None = None
        for future in self._futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out += future.result(timeout=remaining)
            except grpc.FutureTimeoutError:
                raise
            except grpc.FutureCancelledError:
                if failure is None:
                    raise
            except grpc.RpcError as exc:
                if failure is None:
                    failure = exc
                    for other in self._futures:
                        other.cancel()  # the fetch is sent again as a whole
        if failure is not None:
            raise failure
        return out

    def cancel(self) -> bool:
        return all([future.cancel() for future in self._futures])


class Fetches:
    """The consumer's ``Fetch`` calls, one unary method per broker address (consumer thread)."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata
        self._methods: dict[str, Any] = {}

    def send(self, request: records_pb2.FetchRequest,
             timeout: float) -> tuple[Any | None, list[TopicPartition]]:
        """(a future of the fetched partitions, or None; the partitions left out because they
        have no leader right now). Raises when no broker answers metadata."""
        metadata = self._metadata
        if not metadata.routes_by_leader():
            return self._method(metadata.address()).future(request, timeout=timeout), []
        view = metadata.view_for({p.topic for p in request.partitions})
        groups = view.group_by_leader(list(request.partitions), lambda p: (p.topic, p.partition),
                                      metadata.address())
        futures = []
        leaderless: list[TopicPartition] = []
        for address, group in groups.items():
            if address is None:
                leaderless += [TopicPartition(p.topic, p.partition) for p in group]
                metadata.invalidate()
                continue
            part = records_pb2.FetchRequest()
            part.CopyFrom(request)
            del part.partitions[:]
            part.partitions.extend(group)
            futures.append(self._method(address).future(part, timeout=timeout))
        return (FanOutFuture(futures) if futures else None), leaderless

    def _method(self, address: str) -> Any:
        method = self._methods.get(address)
        if method is None:
            method = self._methods[address] = self._metadata.channels.channel(address).unary_unary(
                FETCH,
                request_serializer=records_pb2.FetchRequest.SerializeToString,
                response_deserializer=wire.decode_fetch_response,  # zero-copy records
            )
        return method
