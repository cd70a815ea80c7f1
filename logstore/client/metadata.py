"""The client's map of the cluster, and how it stays fresh: brokers, partition leaders, coordinators.

In the restaurant model: the client is handed the addresses of a few kitchens (bootstrap
addresses); it asks one of them for the floor plan (``Metadata``: which kitchen holds which rail,
who is head cook of each) and then takes each order straight to the kitchen that cooks it.

``ClusterMap`` is one answer of the ``Metadata`` call, immutable and pure (no I/O): broker id ->
address, and per topic each partition's leader id and epoch, replicas and ISR.
``ClusterMap.group_by_leader`` says which broker gets which partition's requests.

``Metadata`` owns the current map for one client object:

- **Bootstrap.** ``Metadata`` tries the bootstrap addresses in order (then the live brokers it
  has learned of), round after round with the client's backoff, until one answers; that address
  becomes the *current* one, used for every call that may go to any broker.
- **Routing.** On a single-node broker (``clustered`` false) every call goes to the current
  address: the broker's advertised address is never needed, and nothing is looked up per call.
  In a cluster a partition's requests go to its leader's advertised address, group and
  transaction calls to the coordinator ``FindCoordinator`` names (cached per key).
- **Freshness.** The map is read again every ``max_age_ms`` (a cluster's lookups do it
  themselves; the producer also refreshes its topics' partition counts), and at once after a
  call failed in a way that means it is stale (``observe``): NOT_LEADER, NOT_COORDINATOR,
  NOT_ENOUGH_REPLICAS, METADATA_UNAVAILABLE, or a broker that cannot be reached (which also
  moves the current address to the next in the rotation).

Thread-safety: ``_lock`` serializes refreshes, coordinator lookups and the rotation; the map is
swapped whole, so lookups read ``_map`` without the lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from logstore.api.v1 import admin_pb2, cluster_pb2
from logstore.client.channel import Channels, error_from_detail, is_transient, translate_errors
from logstore.client.config import backoff_seconds, bootstrap_addresses
from logstore.client.models import BrokerInfo, ClusterDescription, PartitionPlacement
from logstore.errors import LogstoreError, NotLeaderError, UnknownTopicError

log = logging.getLogger("logstore.client")

GROUP = cluster_pb2.FindCoordinatorRequest.GROUP
TRANSACTION = cluster_pb2.FindCoordinatorRequest.TRANSACTION

#: Failures after which the map (or the coordinator) is re-read before the next call.
STALE_REASONS = frozenset((
    "NOT_LEADER", "NOT_COORDINATOR", "NOT_ENOUGH_REPLICAS", "METADATA_UNAVAILABLE",
    "UNAVAILABLE", "SHUTTING_DOWN", "FENCED_LEADER_EPOCH",
))
#: Failures that say the broker itself is out of reach: try the next address.
UNREACHABLE_REASONS = frozenset(("UNAVAILABLE", "SHUTTING_DOWN"))

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TopicRoute:
    name: str
    internal: bool
    replication_factor: int
    partitions: tuple[PartitionPlacement, ...]

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


@dataclass(frozen=True)
class ClusterMap:
    """One ``MetadataResponse``, as plain values."""

    clustered: bool
    cluster_name: str = ""
    controller_id: int = 0
    controller_epoch: int = 0
    brokers: Mapping[int, BrokerInfo] = field(default_factory=dict)
    topics: Mapping[str, TopicRoute] = field(default_factory=dict)
    #: Topics asked for by name that came back with an error (UNKNOWN_TOPIC).
    errors: Mapping[str, LogstoreError] = field(default_factory=dict)

    @classmethod
    def from_response(cls, response: cluster_pb2.MetadataResponse) -> ClusterMap:
        brokers = {b.broker_id: BrokerInfo(b.broker_id, b.address, b.alive, b.stream_port) for b in response.brokers}
        topics: dict[str, TopicRoute] = {}
        errors: dict[str, LogstoreError] = {}
        for topic in response.topics:
            if topic.HasField("error") and topic.error.reason:
                errors[topic.name] = error_from_detail(topic.error)
                continue
            placements = sorted(
                (PartitionPlacement(topic.name, p.partition, p.leader_id, p.leader_epoch,
                                    tuple(p.replicas), tuple(p.isr)) for p in topic.partitions),
                key=lambda p: p.partition,
            )
            topics[topic.name] = TopicRoute(topic.name, topic.internal, topic.replication_factor,
                                            tuple(placements))
        return cls(response.clustered, response.cluster_name, response.controller_id,
                   response.controller_epoch, brokers, topics, errors)

    def leader_address(self, topic: str, partition: int) -> str | None:
        """The advertised address of the partition's leader; None when the map knows no live
        leader for it (no leader right now, an unknown partition, or a broker not listed)."""
        route = self.topics.get(topic)
        if route is None or not 0 <= partition < len(route.partitions):
            return None
        broker = self.brokers.get(route.partitions[partition].leader_id)
        if broker is None or not broker.alive:
            return None
        return broker.address

    def group_by_leader(
        self, items: Iterable[K], partition_of: Callable[[K], tuple[str, int]], fallback: str
    ) -> dict[str | None, list[K]]:
        """``items`` grouped by the address their partition's requests go to, order kept within
        a group: ``fallback`` (the current address) for everything on a single node; in a
        cluster the leader's address, None for partitions without a known leader."""
        if not self.clustered:
            return {fallback: list(items)}
        groups: dict[str | None, list[K]] = {}
        for item in items:
            groups.setdefault(self.leader_address(*partition_of(item)), []).append(item)
        return groups

    def live_addresses(self) -> list[str]:
        return [b.address for _, b in sorted(self.brokers.items()) if b.alive and b.address]

    def describe(self) -> ClusterDescription:
        return ClusterDescription(
            clustered=self.clustered,
            cluster_name=self.cluster_name,
            controller_id=self.controller_id,
            controller_epoch=self.controller_epoch,
            brokers=[b for _, b in sorted(self.brokers.items())],
            partitions=[p for name in sorted(self.topics) for p in self.topics[name].partitions],
        )


class Metadata:
    """The current ``ClusterMap`` of one client object (see the module docstring)."""

    def __init__(
        self,
        servers: str,
        channels: Channels,
        *,
        retries: int,
        retry_backoff_ms: float,
        retry_backoff_max_ms: float,
        timeout_s: float,
        max_age_ms: float = 300_000.0,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap_addresses(servers)
        self.channels = channels
        self._retries = retries
        self._backoff = (retry_backoff_ms, retry_backoff_max_ms)
        self._timeout = timeout_s
        self._max_age = max_age_ms / 1000.0
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.RLock()
        self._current = self.bootstrap[0]
        self._map: ClusterMap | None = None
        self._fetched_at = -math.inf
        self._stale = False
        #: Topics the client asked about; a refresh asks for all of them at once.
        self._topics: dict[str, None] = {}
        self._coordinators: dict[tuple[int, str], str] = {}

    # -- what the clients ask ------------------------------------------------------------------

    @property
    def clustered(self) -> bool:
        """Whether the last answer came from a cluster (False before any answer)."""
        current = self._map
        return current is not None and current.clustered

    def address(self) -> str:
        """Where calls that any broker can answer go. With several bootstrap addresses the
        first call asks them for metadata, so it lands on one that answers."""
        if self._map is None and len(self.bootstrap) > 1:
            self.refresh()
        return self._current

    def view(self, *, retries: int | None = None) -> ClusterMap:
        """The map, read first if there is none yet; in a cluster also when it is stale or
        older than ``max_age_ms`` (a single node's routing never depends on it). ``retries``:
        rounds of the rotation to try again (default: the client's)."""
        current = self._map
        if current is None:
            return self.refresh(retries=retries)
        if current.clustered and (self._stale or self._clock() - self._fetched_at > self._max_age):
            return self.refresh(retries=retries)
        return current

    def view_for(self, topics: Iterable[str]) -> ClusterMap:
        """``view()``, read again at once if it does not cover ``topics`` yet (a consumer
        assigned partitions by number: the map knows only topics it was asked about)."""
        missing = [topic for topic in topics if topic not in self._topics]
        if missing:
            current = self._map
            if current is None or not all(t in current.topics for t in missing):
                return self.refresh(missing)
            with self._lock:  # listed by an answer about every topic: ask about them from now on
                self._topics.update(dict.fromkeys(missing))
        return self.view()

    def topic(self, name: str) -> TopicRoute:
        """``name``'s partitions, read fresh from the cluster (a producer learning a topic, or
        a partition number it does not know). Raises the topic's error (UNKNOWN_TOPIC)."""
        current = self.refresh((name,))
        route = current.topics.get(name)
        if route is not None:
            return route
        error = current.errors.get(name)
        if error is not None:
            raise error
        # not listed: the principal may neither read nor write it; DescribeTopic says why
        with translate_errors(self._current):
            self.channels.stub(self._current).DescribeTopic(
                admin_pb2.DescribeTopicRequest(name=name), timeout=self._timeout)
        raise UnknownTopicError(name)

    def routes_by_leader(self) -> bool:
        """Whether partition requests must go to their leaders (a cluster). Before any answer
        this asks once, without a retry: while no broker answers, requests go to the current
        address (and fail there, with the caller's own retries)."""
        current = self._map
        if current is None:
            try:
                current = self.refresh(retries=0)
            except LogstoreError:
                return False
        return current.clustered

    def leader(self, topic: str, partition: int) -> str:
        """Where ``topic``/``partition``'s requests go: the current address on a single node,
        the leader's in a cluster; ``NotLeaderError`` (retriable) when it has no leader now."""
        if not self.routes_by_leader():
            return self._current
        address = self.view_for((topic,)).leader_address(topic, partition)
        if address is None:
            self.invalidate()
            raise NotLeaderError(topic, partition)
        return address

    def stream_port(self, address: str, fresh: bool = False) -> int | None:
        """The Subscribe data channel's port of the broker reached at ``address`` (0: none):
        the one broker's on a single node, whatever address reached it; in a cluster the
        broker advertised at ``address``. From the map as it is (read once if there is none),
        or read anew when ``fresh`` (a broker restarted on another ephemeral port); None when
        no broker answers."""
        try:
            current = self.refresh(retries=0) if fresh or self._map is None else self._map
        except LogstoreError:
            return None
        if not current.clustered:
            return next((b.stream_port for b in current.brokers.values()), 0)
        return next((b.stream_port for b in current.brokers.values() if b.address == address), 0)

    def coordinator(self, key_type: int, key: str) -> str:
        """The address of the group's (``GROUP``) or transactional id's (``TRANSACTION``)
        coordinator: the current address on a single node; in a cluster the broker
        ``FindCoordinator`` names, cached until a call to it fails (``observe``)."""
        if not self.routes_by_leader():
            return self._current
        cached = self._coordinators.get((key_type, key))
        if cached is not None:
            return cached
        with self._lock:
            request = cluster_pb2.FindCoordinatorRequest(key_type=key_type, key=key)  # type: ignore[arg-type]
            response = self._ask(lambda stub: stub.FindCoordinator(request, timeout=self._timeout),
                                 self._retries)
            self._coordinators[(key_type, key)] = response.address
            return str(response.address)

    # -- keeping it fresh ----------------------------------------------------------------------

    def refresh(self, topics: Iterable[str] = (), *, retries: int | None = None,
                wait_s: float | None = None) -> ClusterMap:
        """Ask the cluster again (about every topic asked about so far, plus ``topics``). With
        ``wait_s`` the call waits up to that long for the connection to come up (gRPC's
        ``wait_for_ready``: a broker still starting is waited for, not failed at once) and is
        not retried; its deadline passing is ``UnavailableError``."""
        with self._lock:
            self._topics.update(dict.fromkeys(topics))
            request = cluster_pb2.MetadataRequest(topics=list(self._topics))
            if wait_s is None:
                response = self._ask(lambda stub: stub.Metadata(request, timeout=self._timeout),
                                     self._retries if retries is None else retries)
            else:
                response = self._ask(lambda stub: stub.Metadata(request, timeout=wait_s, wait_for_ready=True), 0)
            current = ClusterMap.from_response(response)
            self._map = current
            self._fetched_at = self._clock()
            self._stale = False
            return current

    def invalidate(self) -> None:
        """Read the map again before the next cluster lookup."""
        self._stale = True

    def observe(self, error: LogstoreError, address: str | None = None) -> None:
        """A call to ``address`` failed with ``error``: if that means the map is stale, read
        it again before the next lookup; if the broker is out of reach, move the current
        address on; if it no longer coordinates, forget it as a coordinator."""
        reason = error.reason
        if reason not in STALE_REASONS:
            return
        self._stale = True
        if address is None:
            return
        if reason in UNREACHABLE_REASONS or reason == "NOT_COORDINATOR":
            with self._lock:
                for key, cached in list(self._coordinators.items()):
                    if cached == address:
                        del self._coordinators[key]
        if reason in UNREACHABLE_REASONS and address == self._current:
            with self._lock:
                rotation = self._rotation()
                if len(rotation) > 1:
                    self._current = rotation[1]
                    log.info("broker %s unreachable (%s); trying %s next", address,
                             error.message, self._current)

    def describe(self) -> ClusterDescription:
        """Brokers, controller and every partition's placement, internal topics included."""
        request = cluster_pb2.MetadataRequest(include_internal=True)
        with self._lock:
            response = self._ask(lambda stub: stub.Metadata(request, timeout=self._timeout), 0)
        return ClusterMap.from_response(response).describe()

    # -- the calls -----------------------------------------------------------------------------

    def _rotation(self) -> list[str]:
        """Addresses to try, the current one first: the bootstrap list, then the live brokers
        of the last map (in a cluster)."""
        candidates = list(self.bootstrap)
        current = self._map
        if current is not None and current.clustered:
            candidates += current.live_addresses()
        candidates = list(dict.fromkeys(candidates))
        if self._current in candidates:
            start = candidates.index(self._current)
            candidates = candidates[start:] + candidates[:start]
        else:
            candidates.insert(0, self._current)
        return candidates

    def _ask(self, call: Callable[[Any], R], retries: int) -> R:
        """``call(stub)`` on the current address, else on each next one in the rotation; a
        round that reached none is repeated after a backoff, ``retries`` times. Under the lock."""
        attempt = 0
        while True:
            error: LogstoreError | None = None
            for address in self._rotation():
                try:
                    with translate_errors(address):
                        result = call(self.channels.stub(address))
                except LogstoreError as exc:
                    if not is_transient(exc):
                        raise
                    error = exc
                    continue
                self._current = address
                return result
            attempt += 1
            assert error is not None
            if attempt > retries:
                raise error
            self._sleep(backoff_seconds(attempt, *self._backoff))
