"""The share-group RPCs of the LogStore service (a mixin of the service class in ``service.py``):
protobuf in, one broker call, protobuf out. ``ShareStream`` serves ShareFetch requests over one
bidirectional stream, one after another, each answered in order with its ``correlation_id``; a
request that fails is answered with ``error`` set and the stream goes on. Requests are read
ahead of the one served (up to ``READ_AHEAD``): one that carries acknowledgements ends the long
polls of the requests before it (each answered with what it acquired, possibly nothing), so
acknowledgements never queue behind a long poll.

Rights: fetching and acknowledging need ``read`` on the group and on every topic (as a consumer
group does); describing and listing need ``read`` on the group; changing the config or the start
offset needs ``admin`` on the group.

In a cluster a broker serves the share-partitions whose state partition it leads
(``broker/share/leadership.py``): a fetch for partitions led elsewhere is NOT_LEADER, and the
admin calls answer for the share-partitions led here (the client asks every broker and merges).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from logstore.api.v1 import share_pb2
from logstore.broker import Broker
from logstore.broker.share import AckKind, AckRange, ShareGroupInfo, SharePartitionInfo
from logstore.broker.share.types import AckResult
from logstore.errors import InvalidRequestError, LogstoreError
from logstore.server.auth import Authorizer
from logstore.server.errors import error_detail
from logstore.server.metrics import Metrics

_RESET = {
    share_pb2.SHARE_RESET_EARLIEST: "earliest",
    share_pb2.SHARE_RESET_LATEST: "latest",
    share_pb2.SHARE_RESET_OFFSET: "offset",
}


def _acks(items: Any) -> list[AckRange]:
    acks = []
    for a in items:
        try:
            kind = AckKind(a.kind)
        except ValueError:
            raise InvalidRequestError(
                f"acknowledgement of {a.topic}/{a.partition}: kind must be ACCEPT, RELEASE, REJECT or "
                f"RENEW, not {a.kind}", field="kind") from None
        delay = a.delay_ms if a.HasField("delay_ms") else None
        acks.append(AckRange(a.topic, a.partition, a.first_offset, a.last_offset, kind, delay, a.error))
    return acks


#: Requests of one share stream read ahead of the one served (a ShareConsumer keeps at most 17
#: in flight); past it the stream is not read (TCP holds the rest back).
READ_AHEAD = 32

Queued = tuple[share_pb2.ShareFetchRequest | LogstoreError, "asyncio.Future[None]"] | BaseException | None


async def _read_ahead(next_raw: Callable[[], Awaitable[bytes | None]], queue: asyncio.Queue[Queued]) -> None:
    """Read the stream's requests into ``queue``, each with the future that ends its wait: the
    one current when it came, resolved by the next request that carries acknowledgements (every
    request before that one then stops waiting). A malformed request is queued as its error; the
    end as None; a read that fails as that exception (after the requests before it)."""
    current: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        while (raw := await next_raw()) is not None:
            try:
                request: share_pb2.ShareFetchRequest | LogstoreError = share_pb2.ShareFetchRequest.FromString(raw)
            except DecodeError as exc:
                request = InvalidRequestError(f"malformed ShareFetchRequest: {exc}", field="request")
            if isinstance(request, share_pb2.ShareFetchRequest) and request.acknowledgements:
                if not current.done():
                    current.set_result(None)
                current = asyncio.get_running_loop().create_future()
            await queue.put((request, current))
        await queue.put(None)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - raised by the answering loop, in order
        await queue.put(exc)


def _refused(results: list[AckResult]) -> list[share_pb2.ShareAcknowledgementResult]:
    return [
        share_pb2.ShareAcknowledgementResult(
            topic=r.topic, partition=r.partition, first_offset=r.first_offset,
            last_offset=r.last_offset, error=error_detail(r.error),
        )
        for r in results if r.error is not None
    ]


def _partition_state(p: SharePartitionInfo) -> share_pb2.SharePartitionState:
    return share_pb2.SharePartitionState(
        topic=p.topic, partition=p.partition, start_offset=p.start_offset, end_offset=p.end_offset,
        log_end_offset=p.log_end_offset, available=p.available, acquired=p.acquired,
        acknowledged=p.acknowledged, archived=p.archived, delayed=p.delayed,
        oldest_unacknowledged_age_ms=p.oldest_unacknowledged_age_ms, redeliveries=p.redeliveries,
        dead_lettered=p.dead_lettered, lock_expiries=p.lock_expiries,
    )


def _description(info: ShareGroupInfo) -> share_pb2.ShareGroupDescription:
    return share_pb2.ShareGroupDescription(
        group_id=info.group_id, config=info.config,
        members=[share_pb2.ShareMember(member_id=m.member_id, last_seen_ms=m.last_seen_ms, acquired=m.acquired)
                 for m in info.members],
        partitions=[_partition_state(p) for p in info.partitions],
    )


class ShareServiceMixin:
    broker: Broker
    authorizer: Authorizer
    metrics: Metrics
    in_flight: int

    def _rpc(self, method: str, context: Any, *, in_flight: bool = True) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError  # provided by the service

    async def _unary(self, method: str, context: Any, call: Any) -> Any:  # provided by the service
        raise NotImplementedError

    def _check_read(self, group_id: str, topics: Any) -> None:
        self.authorizer.check("group", group_id, "read")
        for topic in topics:
            self.authorizer.check("topic", topic, "read")

    async def _share_fetch(self, request: share_pb2.ShareFetchRequest,
                           interrupt: asyncio.Future[None] | None = None) -> share_pb2.ShareFetchResponse:
        acks = _acks(request.acknowledgements)
        self._check_read(request.group_id, {*request.topics, *(a.topic for a in acks)})
        results, outcomes = await self.broker.share_fetch(
            request.group_id, request.member_id, list(request.topics), acks=acks,
            max_records=request.max_records or 500, max_bytes=request.max_bytes,
            max_wait_ms=request.max_wait_ms, lock_ms=request.lock_ms, interrupt=interrupt,
        )
        response = share_pb2.ShareFetchResponse(refused=_refused(results))
        for out in outcomes:
            response.partitions.append(share_pb2.AcquiredRecords(
                topic=out.topic, partition=out.partition,
                records=b"".join(out.records),  # the one copy, at this edge
                first_offsets=out.first_offsets.tolist(), last_offsets=out.last_offsets.tolist(),
                delivery_counts=np.asarray(out.delivery_counts).tolist(),
            ))
        return response

    async def ShareFetch(self, request: share_pb2.ShareFetchRequest, context: Any) -> share_pb2.ShareFetchResponse:
        return await self._unary("ShareFetch", context, lambda: self._share_fetch(request))

    async def ShareStream(self, request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[share_pb2.ShareFetchResponse]:
        """Raw requests (``handlers.py``), each parsed, served and answered in turn."""
        requests = aiter(request_iterator)
        async with self._rpc("ShareStream", context, in_flight=False):
            async for response in self.share_stream_answers(lambda: anext(requests, None)):
                yield response

    async def share_stream_answers(self, next_raw: Callable[[], Awaitable[bytes | None]]
                                   ) -> AsyncIterator[share_pb2.ShareFetchResponse]:
        """The answers of one share stream (gRPC ``ShareStream`` or the stream port's share
        channel), in request order; ``next_raw`` gives the next serialized request (None at
        the end). Requests are read ahead of the one served (``_read_ahead``), so one that
        carries acknowledgements ends the long polls of those before it."""
        queue: asyncio.Queue[Queued] = asyncio.Queue(READ_AHEAD)
        reader = asyncio.ensure_future(_read_ahead(next_raw, queue))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield await self._serve_streamed(*item)
        finally:
            reader.cancel()

    async def _serve_streamed(self, request: share_pb2.ShareFetchRequest | LogstoreError,
                              interrupt: asyncio.Future[None]) -> share_pb2.ShareFetchResponse:
        started = time.perf_counter()
        self.in_flight += 1
        correlation_id = 0
        try:
            if isinstance(request, LogstoreError):
                raise request
            correlation_id = request.correlation_id
            response = await self._share_fetch(request, interrupt)
        except LogstoreError as exc:
            self.metrics.errors.labels(reason=exc.reason).inc()
            response = share_pb2.ShareFetchResponse(error=error_detail(exc))
        finally:
            self.in_flight -= 1
        response.correlation_id = correlation_id
        self.metrics.latency.labels(method="ShareStream.request").observe(time.perf_counter() - started)
        return response

    async def ShareAcknowledge(self, request: share_pb2.ShareAcknowledgeRequest, context: Any) -> share_pb2.ShareAcknowledgeResponse:
        async def call() -> share_pb2.ShareAcknowledgeResponse:
            acks = _acks(request.acknowledgements)
            self._check_read(request.group_id, {a.topic for a in acks})
            results = await self.broker.share_acknowledge(
                request.group_id, request.member_id, acks, lock_ms=request.lock_ms, leave=request.leave)
            return share_pb2.ShareAcknowledgeResponse(refused=_refused(results))

        return await self._unary("ShareAcknowledge", context, call)

    async def ListShareGroups(self, request: share_pb2.ListShareGroupsRequest, context: Any) -> share_pb2.ListShareGroupsResponse:
        async def call() -> share_pb2.ListShareGroupsResponse:
            return share_pb2.ListShareGroupsResponse(groups=[
                share_pb2.ShareGroupSummary(group_id=g, members=m, acquired=a)
                for g, m, a in self.broker.list_share_groups()
                if self.authorizer.can("group", g, "read")
            ])

        return await self._unary("ListShareGroups", context, call)

    async def DescribeShareGroup(self, request: share_pb2.DescribeShareGroupRequest, context: Any) -> share_pb2.ShareGroupDescription:
        async def call() -> share_pb2.ShareGroupDescription:
            self.authorizer.check("group", request.group_id, "read")
            return _description(self.broker.describe_share_group(request.group_id))

        return await self._unary("DescribeShareGroup", context, call)

    async def AlterShareGroupConfig(self, request: share_pb2.AlterShareGroupConfigRequest, context: Any) -> share_pb2.ShareGroupDescription:
        async def call() -> share_pb2.ShareGroupDescription:
            self.authorizer.check("group", request.group_id, "admin")
            await self.broker.alter_share_group_config(request.group_id, dict(request.set), list(request.reset))
            return _description(self.broker.describe_share_group(request.group_id))

        return await self._unary("AlterShareGroupConfig", context, call)

    async def ResetShareGroup(self, request: share_pb2.ResetShareGroupRequest, context: Any) -> share_pb2.ResetShareGroupResponse:
        async def call() -> share_pb2.ResetShareGroupResponse:
            spec = _RESET.get(request.spec)
            if spec is None:
                raise InvalidRequestError(f"unknown reset spec {request.spec} (EARLIEST, LATEST, OFFSET)", field="spec")
            self.authorizer.check("group", request.group_id, "admin")
            infos = await self.broker.reset_share_group(
                request.group_id, request.topic, list(request.partitions), spec, request.offset)
            return share_pb2.ResetShareGroupResponse(partitions=[_partition_state(p) for p in infos])

        return await self._unary("ResetShareGroup", context, call)
