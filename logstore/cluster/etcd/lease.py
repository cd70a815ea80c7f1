"""Keeping one etcd lease alive from a background task: ``KeepAlive``.

Every ``ttl_s / 3`` the task sends a renewal on a LeaseKeepAlive stream and waits for the answer.
It tracks when the lease expires at the latest (send time of the last answered renewal + the TTL
that answer gave). On a stream error or a late answer it reopens the stream on the next endpoint,
with a short backoff. It gives up, and calls ``on_lost`` exactly once, when:

- etcd answers that the lease is gone (TTL <= 0: it expired or was revoked), or
- no renewal was answered before the lease's expiry time passed (etcd may have expired it).

``confirmed_lost`` tells the two apart: True when etcd said the lease is gone; False when it
could not be renewed in time, e.g. while etcd has no quorum (etcd then does not expire leases
either, and extends them all when a new raft leader is elected, so the lease may well survive).

``on_lost`` runs in the task, with no argument; it may be a coroutine function (an exception
it raises is logged, not raised). ``lost_reason`` then says why. ``stop()`` never calls it.

The first renewal is sent at once, so start keeping a lease alive right after granting it: the
initial expiry estimate is "now + ttl_s".

Not thread-safe: create and stop it on the event loop it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

import grpc

from logstore.cluster.etcd import etcd_pb2 as pb
from logstore.cluster.etcd.channels import BACKOFF_FIRST_S, REQUIRE_LEADER, ChannelPool
from logstore.cluster.etcd.errors import EtcdError

log = logging.getLogger(__name__)

OnLost = Callable[[], object]


class _Restart(Exception):
    """The stream failed or answered late: reopen it on the next endpoint."""


class KeepAlive:
    def __init__(self, pool: ChannelPool, lease_id: int, ttl_s: float, on_lost: OnLost) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        self.lease_id = lease_id
        self.ttl_s = ttl_s
        self.interval_s = ttl_s / 3
        self._pool = pool
        self._on_lost = on_lost
        self._clock = pool.clock
        self._expires_at = self._clock() + ttl_s
        self.lost_reason: str | None = None
        self.confirmed_lost = False
        self.renewals = 0
        self._stopped = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"etcd-keepalive-{lease_id:x}"
        )

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    @property
    def running(self) -> bool:
        return not self._task.done()

    def remaining_s(self) -> float:
        """Seconds until the lease expires at the latest, by the last answered renewal."""
        return self._expires_at - self._clock()

    async def stop(self) -> None:
        """Stop renewing (the lease itself stays until its TTL runs out or it is revoked)."""
        self._stopped.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        backoff_s = BACKOFF_FIRST_S
        while True:
            endpoint = self._pool.current
            try:
                stream = self._pool.stubs(endpoint).lease.LeaseKeepAlive(metadata=REQUIRE_LEADER)
            except EtcdError as error:  # the client was closed
                await self._lose(f"cannot renew: {error}")
                return
            try:
                await self._renew_on(stream, endpoint)
                return  # lost
            except (_Restart, grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError) as error:
                log.info("lease %x: keepalive via %s failed: %r", self.lease_id, endpoint, error)
                self._pool.failed(endpoint)
            finally:
                stream.cancel()
            if self._pool.closed:
                await self._lose("the etcd client was closed")
                return
            if self.remaining_s() <= 0:
                await self._lose(f"no renewal answered within the {self.ttl_s:g} s TTL")
                return
            await asyncio.sleep(min(backoff_s, self.remaining_s()))
            backoff_s = min(backoff_s * 2, self.interval_s)

    async def _renew_on(self, stream: grpc.aio.StreamStreamCall, endpoint: str) -> None:
        """Renew over one stream until the lease is lost (returns) or the stream fails (raises)."""
        while True:
            sent_at = self._clock()
            await stream.write(pb.LeaseKeepAliveRequest(id=self.lease_id))
            wait_s = min(self.remaining_s(), self.interval_s)
            if wait_s <= 0:
                raise _Restart("lease may have expired")
            answer = await asyncio.wait_for(stream.read(), timeout=wait_s)
            if answer is grpc.aio.EOF:
                raise _Restart(f"{endpoint} ended the keepalive stream")
            if answer.ttl_s <= 0:
                self.confirmed_lost = not self._stopped.is_set()
                await self._lose("etcd says the lease expired or does not exist")
                return
            self._expires_at = sent_at + answer.ttl_s
            self.renewals += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=self.interval_s)
            if self._stopped.is_set():
                raise asyncio.CancelledError

    async def _lose(self, reason: str) -> None:
        if self.lost_reason is not None or self._stopped.is_set():
            return
        self.lost_reason = reason
        log.warning("lease %x lost: %s", self.lease_id, reason)
        try:
            result = self._on_lost()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("lease %x: on_lost failed", self.lease_id)
