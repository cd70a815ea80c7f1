"""The LogStore gRPC service: protobuf in, one broker call, protobuf out.

Every handler follows the same shape — convert the request (``convert.py``), call one broker
method, convert the result — inside ``rpc_errors``, which turns any exception into a rich gRPC
status through the table in ``errors.py``. Record data crosses as raw batch bytes; the only copy
of a fetched batch is the one into the response at this edge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc

from logstore.api.v1 import admin_pb2, logstore_pb2_grpc, records_pb2
from logstore.broker import Broker
from logstore.errors import (
    InvalidConfigError,
    InvalidRequestError,
    LimitExceededError,
    LogstoreError,
)
from logstore.server import convert, wire
from logstore.server.auth import Authorizer, SecurityConfig
from logstore.server.errors import error_detail, to_status
from logstore.server.metrics import Metrics
from logstore.server.service_cluster import ClusterServiceMixin
from logstore.server.service_groups import GroupServiceMixin
from logstore.server.service_share import ShareServiceMixin
from logstore.storage import TopicDescription

log = logging.getLogger(__name__)

T = TypeVar("T")


#: gRPC's server leaves a reference cycle behind every call, and the cycle keeps the call's
#: buffers (about its request's size) until Python's cyclic collector runs, which on its own
#: schedule can be hundreds of MiB of requests later. So the service collects after every quarter
#: of ``max_queued_request_bytes`` (at least this much) of produce requests answered: measured,
#: 16 connections flooding 1 MiB requests peaked at 140 instead of 430 MiB of heap.
MIN_COLLECT_BYTES = 8 << 20

#: A ProduceStream request at least this large has its stream's next request read while it is
#: handled. The broker turns off gRPC's BDP probing, so a stream's flow-control window opens only
#: while its handler reads: without this read the next request's bytes waited in the client
#: until the answer had gone, and the loopback transfer of each 4 MiB request never overlapped
#: the work on the one before. Smaller requests (one-record round trips) are read as before.
READ_AHEAD_BYTES = 256 << 10


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, classes, the loaded broker state) out of the
    collector's sight, so that the collections ``_release`` runs only walk what was created
    since: a full collection of a started broker (~45,000 objects) took 25-55 ms on a loaded
    2-core box, a stall of the event loop every 64 MiB produced by default; frozen, microseconds.
    Called once by the server process before it serves (the frozen objects are freed by
    reference counting as usual; only a reference cycle among them would stay)."""
    gc.collect()
    gc.freeze()


class LogStoreService(ClusterServiceMixin, GroupServiceMixin, ShareServiceMixin, logstore_pb2_grpc.LogStoreServicer):
    def __init__(
        self, broker: Broker, metrics: Metrics, authorizer: Authorizer | None = None, *,
        cluster: Any = None, advertised: str = "",
    ) -> None:
        self.broker = broker
        self.cluster = cluster
        self.advertised = advertised
        #: The Subscribe data channel's port (``stream_listener``), 0 while there is none.
        self.stream_port = 0
        self.metrics = metrics
        #: ACL checks; allows everything when the server runs without a security file.
        self.authorizer = authorizer or Authorizer(SecurityConfig())
        #: Calls being served (shutdown waits for them to drain).
        self.in_flight = 0
        self._subscriptions_by_peer: dict[str, int] = defaultdict(int)
        #: Produce bytes answered since the last garbage collection (see ``_release``).
        self._released_bytes = 0
        self._collect_every_bytes = max(broker.backpressure.queued.budget.limit // 4, MIN_COLLECT_BYTES)

    @asynccontextmanager
    async def _rpc(
        self, method: str, context: grpc.aio.ServicerContext, *, in_flight: bool = True
    ) -> AsyncIterator[None]:
        """Time the call, count it, and turn any exception into a rich status.

        ``in_flight`` counts the call as work that shutdown waits for (an idle stream is not)."""
        started = time.perf_counter()
        code = "OK"
        counted = False
        self.in_flight += in_flight
        try:
            yield
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            status = to_status(exc)
            code = status.code.name
            self.metrics.errors.labels(reason=_reason(exc)).inc()
            if status.code is grpc.StatusCode.INTERNAL:
                log.error("%s failed", method, exc_info=exc)
            else:
                log.info("%s refused: %s (%s)", method, status.details, _reason(exc))
            # Counted before the status leaves: the loop may serve a /metrics scrape while
            # abort_with_status awaits, and the caller may already have seen the status.
            self._count(method, code, started)
            counted = True
            await context.abort_with_status(status)
        finally:
            self.in_flight -= in_flight
            if not counted:
                self._count(method, code, started)

    def _count(self, method: str, code: str, started: float) -> None:
        self.metrics.requests.labels(method=method, code=code).inc()
        self.metrics.latency.labels(method=method).observe(time.perf_counter() - started)

    async def _unary(self, method: str, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
        async with self._rpc(method, context):
            return await call()
        raise AssertionError("unreachable")  # abort_with_status raises

    def _release(self, size: int) -> None:
        """A produce request of ``size`` bytes is answered: free its room, and collect the
        garbage gRPC's calls left when enough bytes went by."""
        self.broker.backpressure.queued.release(size)
        self._released_bytes += size
        if self._released_bytes >= self._collect_every_bytes:
            self._released_bytes = 0
            gc.collect()

    # -- topics -------------------------------------------------------------------------------------

    async def CreateTopic(self, request: admin_pb2.CreateTopicRequest, context: Any) -> admin_pb2.TopicDescription:
        async def call() -> admin_pb2.TopicDescription:
            self.authorizer.check("topic", request.name, "admin")
            if self.cluster is not None:
                description = await self.cluster.create_topic(
                    request.name, convert.partition_count(request.partitions),
                    request.replication_factor, dict(request.config),
                )
                return self._topic_description(description, self.broker)
            if request.replication_factor not in (0, 1):
                raise InvalidConfigError(
                    f"replication_factor={request.replication_factor} needs a cluster; a single-node "
                    f"broker keeps one copy", key="replication_factor", value=request.replication_factor,
                )
            description = self.broker.create_topic(
                request.name, convert.partition_count(request.partitions), dict(request.config)
            )
            return convert.topic_description(description, self.broker)

        return await self._unary("CreateTopic", context, call)

    async def DeleteTopic(self, request: admin_pb2.DeleteTopicRequest, context: Any) -> admin_pb2.DeleteTopicResponse:
        async def call() -> admin_pb2.DeleteTopicResponse:
            self.authorizer.check("topic", request.name, "admin")
            if self.cluster is not None:
                await self.cluster.delete_topic(request.name)  # every replica deletes its copy
            else:
                self.broker.delete_topic(request.name)
            self.metrics.forget_topic(request.name)
            return admin_pb2.DeleteTopicResponse()

        return await self._unary("DeleteTopic", context, call)

    async def ListTopics(self, request: admin_pb2.ListTopicsRequest, context: Any) -> admin_pb2.ListTopicsResponse:
        async def call() -> admin_pb2.ListTopicsResponse:
            topics = [
                t for t in self.broker.list_topics(request.include_internal)
                if self.authorizer.can("topic", t[0], "describe")
            ]
            return admin_pb2.ListTopicsResponse(
                topics=[admin_pb2.TopicSummary(name=n, partitions=p, internal=i) for n, p, i in topics]
            )

        return await self._unary("ListTopics", context, call)

    async def DescribeTopic(self, request: admin_pb2.DescribeTopicRequest, context: Any) -> admin_pb2.TopicDescription:
        async def call() -> admin_pb2.TopicDescription:
            self.authorizer.check("topic", request.name, "describe")
            return self._topic_description(self.broker.describe_topic(request.name), self.broker)

        return await self._unary("DescribeTopic", context, call)

    async def AlterTopicConfig(self, request: admin_pb2.AlterTopicConfigRequest, context: Any) -> admin_pb2.TopicDescription:
        async def call() -> admin_pb2.TopicDescription:
            self.authorizer.check("topic", request.name, "admin")
            if self.cluster is not None:  # written to etcd, applied by every broker
                description = await self.cluster.alter_topic_config(
                    request.name, dict(request.set), list(request.reset)
                )
            else:
                description = self.broker.alter_topic_config(request.name, dict(request.set), list(request.reset))
            return self._topic_description(description, self.broker)

        return await self._unary("AlterTopicConfig", context, call)

    async def AddPartitions(self, request: admin_pb2.AddPartitionsRequest, context: Any) -> admin_pb2.TopicDescription:
        async def call() -> admin_pb2.TopicDescription:
            self.authorizer.check("topic", request.name, "admin")
            if self.cluster is not None:  # placed in etcd, led where the controller says
                description = await self.cluster.add_partitions(request.name, request.total)
            else:
                description = self.broker.add_partitions(request.name, request.total)
            return self._topic_description(description, self.broker)

        return await self._unary("AddPartitions", context, call)

    def _topic_description(self, description: TopicDescription, broker: Broker) -> admin_pb2.TopicDescription:
        """A clustered topic's description also carries the keys kept in etcd only
        (min_insync_replicas, unclean_leader_election)."""
        described = convert.topic_description(description, broker)
        if self.cluster is not None:
            described.config.update(self.cluster.cluster_topic_config(description.name))
        return described

    # -- records ------------------------------------------------------------------------------------

    async def _produce(
        self, request: wire.ProduceRequestView, peer: str, *, stream: bool = False
    ) -> records_pb2.ProduceResponse:
        items = convert.produce_items(request)
        for topic in {item.topic for item in items}:
            self.authorizer.check("topic", topic, "write")
        outcomes = []
        if items or request.end_transaction is None:  # an end alone carries no partitions
            # the peer (client address and port) is the connection: its bytes in flight are bounded
            outcomes = await self.broker.produce(items, convert.acks(request.acks), client=peer)
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.error is None:
                self.metrics.produced(item.topic, outcome.record_count, len(item.records))
            else:
                self.metrics.errors.labels(reason=outcome.error.reason).inc()
        response = records_pb2.ProduceResponse(
            correlation_id=request.correlation_id,
            results=[convert.produce_result(outcome) for outcome in outcomes],
        )
        if request.end_transaction is not None:
            try:
                await self._end_transaction(request.transactional_id, request.end_transaction)
            except LogstoreError as exc:
                if not stream:
                    raise
                self.metrics.errors.labels(reason=exc.reason).inc()
                response.error.CopyFrom(error_detail(exc))
        return response

    async def _end_transaction(self, transactional_id: str, end: records_pb2.EndTransaction) -> None:
        """EndTxn pipelined behind a transaction's last batch (``ProduceRequest.end_transaction``)."""
        self.broker.end_txn_after_batches(
            transactional_id, end.producer_id, end.producer_epoch, end.commit,
            [(s.topic, s.partition, s.next_sequence) for s in end.sequences],
        )
        await self.broker.transactions_replicated(transactional_id)

    async def Produce(self, requests: AsyncIterator[bytes], context: Any) -> records_pb2.ProduceResponse:
        """Takes the serialized request: batches stay views of it (see ``handlers.py``). gRPC
        hands it over as a stream of one, so that it is read only once there is room under
        ``max_queued_request_bytes`` (a call refused for want of room was never read)."""
        queued = self.broker.backpressure.queued
        async with self._rpc("Produce", context):
            held = await queued.reserve()
            try:
                raw = await anext(aiter(requests), None)
                if raw is None:
                    raise InvalidRequestError("a Produce call without a request", field="request")
                held = queued.resize(held, len(raw))
                return await self._produce(wire.parse_produce_request(raw), context.peer())
            finally:
                self._release(held)
        raise AssertionError("unreachable")  # abort_with_status raises

    async def ProduceStream(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[records_pb2.ProduceResponse]:
        """Requests are handled one after another, so responses keep request order. A request
        that fails is answered with ``error`` set; the stream stays open. The next request is
        read only while ``max_queued_request_bytes`` has room; while a large request (256 KiB or
        more) is handled, the next one is already being read."""
        peer = context.peer()
        queued = self.broker.backpressure.queued
        requests = aiter(request_iterator)
        #: The next request, read while the one before it is written.
        reading: asyncio.Future[bytes | None] | None = None
        async with self._rpc("ProduceStream", context, in_flight=False):
            try:
                while True:
                    if reading is None:
                        await queued.wait_below()
                        raw = await anext(requests, None)
                    else:
                        raw, reading = await reading, None
                    if raw is None:
                        break
                    held = queued.take(len(raw))
                    if len(raw) >= READ_AHEAD_BYTES and queued.has_room:
                        reading = asyncio.ensure_future(anext(requests, None))
                    yield await self._stream_request(raw, held, peer)
            finally:
                if reading is not None:
                    reading.cancel()

    async def _stream_request(self, raw: bytes | memoryview, held: int, peer: str) -> records_pb2.ProduceResponse:
        """One request of a ProduceStream (``held`` bytes of ``max_queued_request_bytes``, freed
        here): its answer, or its error as the answer's ``error``."""
        started = time.perf_counter()
        correlation_id = 0
        self.in_flight += 1
        try:
            request = wire.parse_produce_request(raw)
            correlation_id = request.correlation_id
            response = await self._produce(request, peer, stream=True)
        except LogstoreError as exc:
            self.metrics.errors.labels(reason=exc.reason).inc()
            response = records_pb2.ProduceResponse(correlation_id=correlation_id, error=error_detail(exc))
        finally:
            self.in_flight -= 1
            self._release(held)
        self.metrics.latency.labels(method="ProduceStream.request").observe(time.perf_counter() - started)
        return response

    async def Fetch(self, request: records_pb2.FetchRequest, context: Any) -> bytes:
        """Answers a serialized FetchResponse (see ``handlers.py``)."""

        async def call() -> bytes:
            items = convert.fetch_items(request)
            for topic in {item.topic for item in items}:
                self.authorizer.check("topic", topic, "read")
            if request.group_id:
                self.authorizer.check("group", request.group_id, "read")
            outcomes = await self.broker.fetch(
                items,
                max_wait_ms=request.max_wait_ms,
                min_bytes=request.min_bytes,
                max_bytes=request.max_bytes,
                isolation=convert.isolation(request.isolation_level),
                group=(request.group_id, request.member_id, request.member_epoch) if request.group_id else None,
            )
            for item, outcome in zip(items, outcomes, strict=True):
                if outcome.records:
                    self.metrics.fetched(item.topic, outcome.next_offset - item.offset, len(outcome.records))
            # serialized here, records straight from the segment mapping: one copy (wire.py)
            return wire.encode_fetch_response(
                [
                    wire.encode_fetched_partition(convert.fetched_partition(o, with_records=False), o.records)
                    for o in outcomes
                ]
            )

        return await self._unary("Fetch", context, call)

    async def Subscribe(self, request: records_pb2.SubscribeRequest, context: Any) -> AsyncIterator[bytes]:
        """Yields serialized SubscribeResponses (see ``handlers.py``)."""
        peer = context.peer()
        async with self._rpc("Subscribe", context):
            limit = self.broker.config.max_subscriptions_per_connection
            if self._subscriptions_by_peer[peer] >= limit:
                raise LimitExceededError(
                    f"this connection already has {limit} open subscriptions "
                    f"(max_subscriptions_per_connection)",
                    limit_name="max_subscriptions_per_connection",
                    limit=limit,
                )
            self._subscriptions_by_peer[peer] += 1
            try:
                async for small, records in self.subscribe_messages(request):
                    yield wire.encode_subscribe_response(small, records)
            finally:
                self._subscriptions_by_peer[peer] -= 1
                if self._subscriptions_by_peer[peer] <= 0:
                    del self._subscriptions_by_peer[peer]

    async def subscribe_messages(
        self, request: records_pb2.SubscribeRequest,
    ) -> AsyncIterator[tuple[records_pb2.SubscribeResponse, bytes | memoryview]]:
        """A Subscribe's messages, each as its small fields (``records`` unset) and its records
        (a view of the segment): what the gRPC call and the Subscribe data channel
        (``stream_listener``) send, each its own way. Checks the caller's read right first."""
        self.authorizer.check("topic", request.topic, "read")
        start = self.broker.resolve_start(
            request.topic, request.partition, convert.subscribe_start(request),
            request.offset, request.timestamp_ms,
        )
        self.metrics.subscriptions.inc()
        position = start  # offsets delivered so far end here
        try:
            async for outcome in self.broker.subscribe(
                request.topic, request.partition, start,
                max_bytes=request.max_bytes, isolation=convert.isolation(request.isolation_level),
            ):
                self.metrics.fetched(request.topic, outcome.next_offset - position, len(outcome.records))
                position = outcome.next_offset
                yield records_pb2.SubscribeResponse(
                    high_watermark=outcome.high_watermark,
                    log_start_offset=outcome.log_start_offset,
                    next_offset=outcome.next_offset,
                    start_offset=start,
                    aborted_transactions=convert.aborted(outcome.aborted),
                ), outcome.records
        finally:
            self.metrics.subscriptions.dec()

    async def ListOffsets(self, request: records_pb2.ListOffsetsRequest, context: Any) -> records_pb2.ListOffsetsResponse:
        async def call() -> records_pb2.ListOffsetsResponse:
            for topic in {p.topic for p in request.partitions}:
                self.authorizer.check("topic", topic, "read")
            listed = self.broker.list_offsets(
                convert.list_offsets_items(request), convert.isolation(request.isolation_level)
            )
            return records_pb2.ListOffsetsResponse(offsets=[convert.listed_offset(item) for item in listed])

        return await self._unary("ListOffsets", context, call)


def _reason(error: BaseException) -> str:
    return error.reason if isinstance(error, LogstoreError) else "INTERNAL"
