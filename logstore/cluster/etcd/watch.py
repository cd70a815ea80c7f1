"""Watching a range of keys: ``Watch``, an async iterator of ``WatchEvent`` in revision order.

One Watch stream per ``Watch``, on the pool's current endpoint. When the stream fails (member
killed, cut off, without a raft leader: the "require leader" metadata makes it cancel the watch)
the watch reopens on the next endpoint from the last revision it delivered + 1, so no event is
lost or repeated; it keeps trying, with a backoff up to 1 s, until it is closed. A watch started
at revision 0 ("from now") resumes from the revision etcd reported when it was created.

When the start revision (or the resume revision, after a long outage) was compacted away,
iterating raises ``EtcdCompactedError``: re-read the keys and watch again from that read's
revision + 1. Events of one revision (one transaction) always arrive together.

Pull-based: nothing runs between two ``__anext__`` calls; gRPC flow control holds the rest.
Not thread-safe: one task iterates a watch; ``close()`` may come from another task.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import grpc

from logstore.cluster.etcd import etcd_pb2 as pb
from logstore.cluster.etcd.channels import BACKOFF_FIRST_S, REQUIRE_LEADER, ChannelPool
from logstore.cluster.etcd.errors import EtcdCompactedError, translate
from logstore.cluster.etcd.kv import WatchEvent
from logstore.cluster.etcd.wire import watch_event

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 1.0


class Watch:
    def __init__(self, pool: ChannelPool, key: bytes, range_end: bytes, start_revision: int) -> None:
        if start_revision < 0:
            raise ValueError(f"start_revision must be >= 0, not {start_revision}")
        self.key = key
        self.range_end = range_end
        #: The revision the watch resumes from after a failure (0 until the first watch exists).
        self.next_revision = start_revision
        self.reconnects = 0
        self._pool = pool
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._endpoint = ""
        self._pending: collections.deque[WatchEvent] = collections.deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint(self) -> str:
        """The endpoint of the current (or last) stream; empty before the first ``__anext__``."""
        return self._endpoint

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the watch; iteration stops (StopAsyncIteration)."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None

    async def __anext__(self) -> WatchEvent:
        backoff_s = BACKOFF_FIRST_S
        while not self._pending:
            if self._closed or self._pool.closed:
                raise StopAsyncIteration
            try:
                if self._stream is None:
                    await self._open()
                assert self._stream is not None
                answer = await self._stream.read()
                if answer is grpc.aio.EOF:
                    raise _Restart("stream ended")
                self._take(answer)
                backoff_s = BACKOFF_FIRST_S
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, _Restart) as error:
                if self._closed or self._pool.closed:
                    raise StopAsyncIteration from error
                if isinstance(error, grpc.aio.AioRpcError) and error.code() not in STREAM_RETRYABLE:
                    raise translate(error, self._endpoint) from error
                await self._restart(repr(error), backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
        return self._pending.popleft()

    async def _open(self) -> None:
        self._endpoint = self._pool.current
        self._stream = self._pool.stubs(self._endpoint).watch.Watch(metadata=REQUIRE_LEADER)
        create = pb.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=self.next_revision
        )
        await self._stream.write(pb.WatchRequest(create_request=create))

    def _take(self, answer: pb.WatchResponse) -> None:
        if answer.created and self.next_revision == 0:
            self.next_revision = answer.header.revision + 1
        if answer.canceled:
            if answer.compact_revision:
                raise EtcdCompactedError(
                    f"watch of {self.key!r} from revision {self.next_revision}: revisions up to "
                    f"{answer.compact_revision} were compacted; re-read, then watch from the "
                    f"read's revision + 1",
                    compact_revision=answer.compact_revision,
                    start_revision=self.next_revision,
                )
            raise _Restart(f"canceled by etcd: {answer.cancel_reason}")
        for event in answer.events:
            item = watch_event(event)
            self._pending.append(item)
            self.next_revision = item.revision + 1

    async def _restart(self, why: str, backoff_s: float) -> None:
        log.info("watch of %r via %s failed (%s); resuming from %d", self.key, self._endpoint,
                 why, self.next_revision)
        self._pool.failed(self._endpoint)
        self._drop_stream()
        self.reconnects += 1
        await asyncio.sleep(backoff_s)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None


class _Restart(Exception):
    """The stream ended or etcd canceled the watch: reopen it on the next endpoint."""


#: Errors after which the watch reopens (re-watching from a revision is always safe).
STREAM_RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
})
