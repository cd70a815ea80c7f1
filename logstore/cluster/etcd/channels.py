"""The endpoints of an etcd cluster, one grpc.aio channel each, and failover between them.

``ChannelPool.unary`` sends one request to the current endpoint; on UNAVAILABLE or
DEADLINE_EXCEEDED (member down, cut off, without a raft leader, or too slow) it moves to the
next endpoint and tries again, pass after pass with a short backoff, until the call's
``timeout_s`` is spent; then it raises ``EtcdUnavailableError``. Each attempt gets at most
``attempt_timeout_s`` (default: the call's ``timeout_s`` / number of endpoints), so one stopped
member cannot eat the whole budget. Any other error is raised at once as ``EtcdError``.

Every call carries etcd's "require leader" metadata: a member that has lost its raft leader
answers UNAVAILABLE at once instead of waiting, and cancels streams it serves.

Not thread-safe: one event loop uses a pool (asyncio tasks may share it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from logstore.cluster.etcd import etcd_pb2_grpc as rpc
from logstore.cluster.etcd.errors import (
    RETRYABLE_CODES,
    EtcdError,
    EtcdUnavailableError,
    describe,
    translate,
)

T = TypeVar("T")

#: etcd's gRPC metadata asking the member to refuse requests while it knows no raft leader.
REQUIRE_LEADER = (("hasleader", "true"),)
#: Reconnect quickly to a member that comes back (gRPC's default backoff grows to 120 s).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # etcd refuses pings more often than every 5 s; these find a silently dead member in ~15 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 0.5


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[str, ...]:
    """``"h1:p1,h2:p2"`` or a list of ``host:port`` -> a tuple; an optional ``etcd://`` or
    ``http://`` scheme is dropped. Raises ValueError when nothing is left or a port is missing."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed: list[str] = []
    for item in items:
        address = item.strip()
        for scheme in ("etcd://", "http://"):
            if address.startswith(scheme):
                address = address[len(scheme):]
        address = address.rstrip("/")
        if not address:
            continue
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {item.strip()!r} is not host:port")
        parsed.append(address)
    if not parsed:
        raise ValueError(f"no etcd endpoint in {endpoints!r}")
    return tuple(parsed)


class Stubs:
    """The four service stubs over one endpoint's channel."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)


class ChannelPool:
    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = 5.0,
        attempt_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.endpoints = parse_endpoints(endpoints)
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.clock = clock
        self._current = 0
        self._stubs: dict[str, Stubs] = {}
        self.closed = False

    @property
    def current(self) -> str:
        """The endpoint the next call goes to first."""
        return self.endpoints[self._current]

    def stubs(self, endpoint: str | None = None) -> Stubs:
        if self.closed:
            raise EtcdError("the etcd client is closed", code="CANCELLED")
        endpoint = endpoint or self.current
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            stubs = self._stubs[endpoint] = Stubs(endpoint)
        return stubs

    def failed(self, endpoint: str) -> None:
        """``endpoint`` failed: the next call starts at the endpoint after it."""
        if endpoint == self.current:
            self._current = (self._current + 1) % len(self.endpoints)

    async def unary(
        self,
        method: Callable[[Stubs], Callable[..., Any]],
        request: object,
        *,
        timeout_s: float | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """``method(stubs)(request)`` with failover (see the module doc). With ``endpoint``: that
        endpoint only, still retried until the timeout."""
        budget_s = timeout_s or self.timeout_s
        attempt_s = self.attempt_timeout_s or budget_s / len(self.endpoints)
        deadline = self.clock() + budget_s
        failures: dict[str, str] = {}
        backoff_s = BACKOFF_FIRST_S
        while True:
            for _ in range(len(self.endpoints) if endpoint is None else 1):
                target = endpoint or self.current
                remaining_s = deadline - self.clock()
                if remaining_s <= 0:
                    break
                try:
                    return await method(self.stubs(target))(
                        request,
                        timeout=min(remaining_s, attempt_s),
                        metadata=REQUIRE_LEADER,
                    )
                except grpc.aio.AioRpcError as error:
                    if self.closed:
                        raise EtcdError("the etcd client is closed", code="CANCELLED") from error
                    if error.code() not in RETRYABLE_CODES:
                        raise translate(error, target) from error
                    failures[target] = describe(error, target)
                    self.failed(target)
            remaining_s = deadline - self.clock()
            if remaining_s <= 0:
                raise self.unavailable(budget_s, failures)
            await asyncio.sleep(min(backoff_s, remaining_s))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    def unavailable(self, budget_s: float, failures: dict[str, str]) -> EtcdUnavailableError:
        listed = ",".join(self.endpoints)
        detail = "; ".join(failures.values()) or "no attempt finished"
        return EtcdUnavailableError(
            f"etcd unavailable: no endpoint of {listed} answered within {budget_s:g} s ({detail})",
            endpoints=listed,
        )

    async def close(self) -> None:
        self.closed = True
        stubs, self._stubs = list(self._stubs.values()), {}
        for item in stubs:
            await item.channel.close()
