"""The replica manager: which partitions this broker leads or follows, and for the ones it leads,
each follower's progress, the ISR and the high watermark (Kafka's ``ReplicaManager`` and
``Partition``).

Leader side. A follower's ReplicaFetch carries its log end offset (it holds every record before
``fetch_offset``). The leader keeps, per follower, that offset and when it last caught up with the
leader's log end; the high watermark is the smallest log end offset in the ISR and only grows.
acks=all produce waits (``wait_replicated``) until it covers the batch. A follower that has not
caught up for ``replica_lag_time_ms`` leaves the ISR; one whose log end reaches the high watermark
(and the start of the current leader epoch) rejoins. The leader writes ISR changes to etcd itself,
guarded by the partition key's mod revision: a leader deposed meanwhile changes nothing.

Follower side: ``fetcher.py`` copies batches from the leader; this module only decides, from the
metadata, which leader each followed partition fetches from.

Fencing. A broker leads a partition only while etcd says so at the leader epoch it knows, and
only while its membership lease is alive: when the lease is lost it stops answering as leader at
once (``fenced``), before the controller has even moved the leadership. An isolated leader can
therefore acknowledge nothing with acks=all after it was deposed: its followers fetch from the new
leader, so its high watermark cannot move, and its ISR writes fail the compare.

Internal topics. ``__consumer_offsets`` is replicated like any topic (the controller creates it,
see ``internal_topics.py``); the leader of each of its partitions coordinates the groups that
hash to it. Until the topic exists in the cluster nobody leads it (``NotLeaderError``: the
broker answers NOT_COORDINATOR). ``__transaction_state`` is replicated the same way, and so is
each ``__share_state.<topic>`` (the share-partitions' state of ``topic``, see
``broker/share/leadership.py``). ``__share_group_state`` is a single node's only.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from logstore.broker import Broker
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC
from logstore.broker.share.leadership import STATE_TOPIC_PREFIX
from logstore.cluster.records import PartitionState, TopicRecord
from logstore.cluster.topic_config import CLUSTER_TOPIC_KEYS, apply_config
from logstore.errors import (
    FencedLeaderEpochError,
    LogstoreError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RequestTimeoutError,
    UnknownTopicError,
)
from logstore.storage import PartitionLog

if TYPE_CHECKING:
    from logstore.cluster.fetcher import FetcherManager

log = logging.getLogger(__name__)

#: acks=all gives up waiting for the followers after this long at most (the client retries);
#: a broker waits 2 x replica_lag_time_ms + 1 s, by which time a slow follower has left the ISR.
REPLICATION_TIMEOUT_S = 30.0

#: Internal topics replicated like any other (the others stay local to each broker).
REPLICATED_INTERNAL_TOPICS = (OFFSETS_TOPIC, TRANSACTIONS_TOPIC)
#: A follower's long poll answers this long after the high watermark moved (or with the next
#: batch, if one comes sooner): followers learn the high watermark without waiting max_wait_ms.
HW_LINGER_S = 0.01


class Role(Enum):
    NONE = "none"
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(slots=True)
class FollowerProgress:
    last_caught_up_ms: int
    log_end_offset: int = -1
    last_fetch_ms: int = 0
    leader_end_at_last_fetch: int = 0


@dataclass
class PartitionReplica:
    topic: str
    partition: int
    log: PartitionLog
    role: Role = Role.NONE
    leader_id: int = -1
    leader_epoch: int = -1
    isr: tuple[int, ...] = ()
    replicas: tuple[int, ...] = ()
    min_insync_replicas: int = 1
    mod_revision: int = 0
    high_watermark: int = 0
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    isr_write_pending: bool = False


@dataclass(slots=True)
class ReplicaFetchOutcome:
    topic: str
    partition: int
    records: memoryview | bytes = b""
    high_watermark: int = -1
    log_start_offset: int = -1
    log_end_offset: int = -1
    error: LogstoreError | None = None


class ReplicaManager:
    """Implements ``logstore.broker.replication.Replication`` for a clustered broker."""

    def __init__(self, broker: Broker, broker_id: int, node: Any, replica_lag_time_ms: int) -> None:
        self.broker = broker
        self.broker_id = broker_id
        self.node = node  # ClusterNode: metadata, ISR writes
        self.replica_lag_time_ms = replica_lag_time_ms
        self.partitions: dict[tuple[str, int], PartitionReplica] = {}
        self.fetchers: FetcherManager | None = None
        #: True while this broker's membership lease is lost: it leads nothing.
        self.fenced = False
        #: The etcd revision of this broker's registration; leadership granted at or before it
        #: belonged to an earlier incarnation.
        self.registered_revision = 0
        self.known_topics: set[str] = set()
        self.isr_shrinks = 0
        self.isr_expands = 0
        self.leader_elections = 0
        self._clock = broker.data_dir.clock
        self._loop = asyncio.get_running_loop()

    # -- the broker's hooks ----------------------------------------------------------------------

    def _replica(self, topic: str, partition: int) -> PartitionReplica | None:
        return self.partitions.get((topic, partition))

    def leader_epoch(self, topic: str, partition: int) -> int:
        replica = self._replica(topic, partition)
        if replica is None:
            if topic in REPLICATED_INTERNAL_TOPICS or topic.startswith(STATE_TOPIC_PREFIX):
                state = self.node.metadata.state(topic, partition)
                raise NotLeaderError(topic, partition, *((state.leader, state.leader_epoch) if state else ()))
            if topic.startswith("__"):
                return 0  # the other internal topics stay local to each broker (not replicated yet)
            if not self.broker.data_dir.has_topic(topic):
                raise UnknownTopicError(topic)
            raise NotLeaderError(topic, partition)
        if replica.role is not Role.LEADER or self.fenced:
            raise NotLeaderError(topic, partition, replica.leader_id, replica.leader_epoch)
        return replica.leader_epoch

    def check_min_isr(self, topic: str, partition: int) -> None:
        replica = self._replica(topic, partition)
        if replica is not None and len(replica.isr) < replica.min_insync_replicas:
            raise NotEnoughReplicasError(topic, partition, len(replica.isr), replica.min_insync_replicas)

    def high_watermark(self, topic: str, partition: int) -> int:
        replica = self._replica(topic, partition)
        if replica is None:
            return self.broker.data_dir.log(topic, partition).log_end_offset
        if replica.role is Role.LEADER:
            self._advance(replica)
        return replica.high_watermark

    async def wait_replicated(self, topic: str, partition: int, end_offset: int) -> None:
        replica = self._replica(topic, partition)
        if replica is None:
            return
        if replica.role is not Role.LEADER or self.fenced:
            raise NotLeaderError(topic, partition, replica.leader_id, replica.leader_epoch)
        self._advance(replica)
        if replica.high_watermark >= end_offset:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        replica.waiters.append((end_offset, future))
        timeout_s = min(REPLICATION_TIMEOUT_S, 2 * self.replica_lag_time_ms / 1000 + 1)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise RequestTimeoutError(
                f"{topic}/{partition}: the in-sync replicas did not confirm offset {end_offset - 1} "
                f"within {timeout_s:.1f} s", topic=topic, partition=partition,
            ) from None
        finally:
            if not future.done():
                future.cancel()
            replica.waiters = [w for w in replica.waiters if w[1] is not future]

    # -- high watermark --------------------------------------------------------------------------

    def _advance(self, replica: PartitionReplica) -> None:
        """Recompute the leader's high watermark; answer the acks=all waits it now covers."""
        log_end = replica.log.log_end_offset
        ends = []
        for member in replica.isr:
            if member == self.broker_id:
                ends.append(log_end)
            else:
                progress = replica.followers.get(member)
                if progress is None or progress.log_end_offset < 0:
                    return  # not heard from yet: the high watermark stays
                ends.append(progress.log_end_offset)
        if not ends:
            return
        new = min(min(ends), log_end)
        if new <= replica.high_watermark:
            return
        replica.high_watermark = new
        if replica.waiters:
            still = []
            for end, future in replica.waiters:
                if end <= new:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((end, future))
            replica.waiters = still
        self.broker.notify_readers(replica.log)

    def _fail_waiters(self, replica: PartitionReplica, error: LogstoreError) -> None:
        for _, future in replica.waiters:
            if not future.done():
                future.set_exception(error)
        replica.waiters = []

    # -- following the metadata ------------------------------------------------------------------

    def reconcile(self, topics: dict[str, TopicRecord], states: dict[tuple[str, int], tuple[PartitionState, int]],
                  live: set[int]) -> None:
        """Take the roles etcd gives this broker: create local partitions, become leader or
        follower, follow ISR changes; delete topics that were deleted."""
        for name in sorted(self.known_topics - set(topics)):
            self._drop_topic(name)
        self.known_topics = set(topics)
        for name, topic in topics.items():
            mine = [p for p, replicas in enumerate(topic.assignment) if self.broker_id in replicas]
            try:
                # every broker keeps every topic's directory (partitions it holds no copy of stay
                # empty), so CreateTopic and DescribeTopic answer on any broker
                self._ensure_local(topic)
            except LogstoreError as exc:
                log.error("cannot create local topic %s: %s", name, exc)
                continue
            for partition in mine:
                entry = states.get((name, partition))
                if entry is None:
                    continue
                self._reconcile_partition(topic, partition, entry[0], entry[1], live)

    def _ensure_local(self, topic: TopicRecord) -> None:
        data_dir = self.broker.data_dir
        if not data_dir.has_topic(topic.name):
            config = {k: v for k, v in topic.config.items() if k not in CLUSTER_TOPIC_KEYS}
            data_dir.create_topic(topic.name, topic.partitions, config, internal=topic.name.startswith("__"))
        else:
            if data_dir.topic(topic.name).partitions < topic.partitions:
                data_dir.add_partitions(topic.name, topic.partitions)
            apply_config(data_dir, topic)  # an AlterTopicConfig

    def _reconcile_partition(self, topic: TopicRecord, partition: int, state: PartitionState,
                             mod_revision: int, live: set[int]) -> None:
        key = (topic.name, partition)
        replica = self.partitions.get(key)
        partition_log = self.broker.data_dir.log(topic.name, partition)
        if replica is None or replica.log is not partition_log:
            replica = self.partitions[key] = PartitionReplica(topic.name, partition, partition_log)
            replica.high_watermark = partition_log.log_start_offset
        replica.replicas = tuple(topic.assignment[partition])
        replica.min_insync_replicas = topic.min_insync_replicas
        replica.mod_revision = mod_revision
        if state.leader == self.broker_id and mod_revision <= self.registered_revision:
            # granted to an earlier incarnation of this broker: wait for the controller's new
            # grant (this copy may have lost its unsynced tail in the restart)
            if replica.role is not Role.NONE:
                self._fail_waiters(replica, NotLeaderError(topic.name, partition))
                replica.role = Role.NONE
            replica.leader_id = -1
            replica.isr = state.isr
            return
        if state.leader == self.broker_id:
            if replica.role is not Role.LEADER or replica.leader_epoch != state.leader_epoch:
                self._become_leader(replica, state)
            else:
                replica.isr = state.isr
                self._isr_changed(replica)
        else:
            if (replica.role is not Role.FOLLOWER or replica.leader_id != state.leader
                    or replica.leader_epoch != state.leader_epoch):
                self._become_follower(replica, state, live)
            replica.isr = state.isr

    def _become_leader(self, replica: PartitionReplica, state: PartitionState) -> None:
        log.info("%s/%d: leader at epoch %d (isr %s)", replica.topic, replica.partition,
                 state.leader_epoch, list(state.isr))
        if self.fetchers is not None:
            self.fetchers.remove(replica.topic, replica.partition)
        partition_log = replica.log
        if state.leader_epoch > partition_log.epochs.latest_epoch:
            partition_log.epochs.assign(state.leader_epoch, partition_log.log_end_offset)
        now = self._clock.now_ms()
        replica.role = Role.LEADER
        replica.leader_id = self.broker_id
        replica.leader_epoch = state.leader_epoch
        replica.isr = state.isr
        replica.followers = {r: FollowerProgress(now) for r in replica.replicas if r != self.broker_id}
        replica.high_watermark = min(
            max(replica.high_watermark, partition_log.log_start_offset), partition_log.log_end_offset
        )
        self.leader_elections += 1
        self._advance(replica)

    def _become_follower(self, replica: PartitionReplica, state: PartitionState, live: set[int]) -> None:
        log.info("%s/%d: follower of broker %d at epoch %d", replica.topic, replica.partition,
                 state.leader, state.leader_epoch)
        self._fail_waiters(
            replica, NotLeaderError(replica.topic, replica.partition, state.leader, state.leader_epoch)
        )
        replica.role = Role.FOLLOWER
        replica.leader_id = state.leader
        replica.leader_epoch = state.leader_epoch
        replica.followers = {}
        replica.high_watermark = min(replica.high_watermark, replica.log.log_end_offset)
        if self.fetchers is None:
            return
        if state.leader >= 0 and state.leader in live:
            self.fetchers.add(replica.topic, replica.partition, state.leader, state.leader_epoch)
        else:
            self.fetchers.remove(replica.topic, replica.partition)

    def _isr_changed(self, replica: PartitionReplica) -> None:
        if len(replica.isr) < replica.min_insync_replicas and replica.waiters:
            self._fail_waiters(replica, NotEnoughReplicasError(
                replica.topic, replica.partition, len(replica.isr), replica.min_insync_replicas
            ))
        self._advance(replica)

    def _drop_topic(self, name: str) -> None:
        for key in [k for k in self.partitions if k[0] == name]:
            replica = self.partitions.pop(key)
            self._fail_waiters(replica, UnknownTopicError(name))
            if self.fetchers is not None:
                self.fetchers.remove(*key)
        if self.broker.data_dir.has_topic(name):
            log.info("topic %s was deleted from the cluster; deleting its local copy", name)
            self.broker.delete_topic(name)

    def follower_high_watermark(self, topic: str, partition: int, leader_high_watermark: int) -> None:
        """A fetch brought the leader's high watermark: the follower's is that, within its log."""
        replica = self._replica(topic, partition)
        if replica is not None and replica.role is Role.FOLLOWER:
            replica.high_watermark = min(leader_high_watermark, replica.log.log_end_offset)

    def fence(self) -> None:
        """The membership lease was lost: lead nothing until etcd says otherwise again."""
        self.fenced = True
        for replica in self.partitions.values():
            if replica.role is Role.LEADER:
                self._fail_waiters(replica, NotLeaderError(replica.topic, replica.partition))

    def unfence(self) -> None:
        self.fenced = False

    def leads(self) -> list[tuple[str, int]]:
        return [k for k, r in self.partitions.items() if r.role is Role.LEADER]

    # -- serving followers -----------------------------------------------------------------------

    def _check_fetch(self, topic: str, partition: int, leader_epoch: int) -> PartitionReplica:
        replica = self._replica(topic, partition)
        if replica is None or replica.role is not Role.LEADER or self.fenced:
            leader = replica.leader_id if replica else -1
            epoch = replica.leader_epoch if replica else -1
            raise NotLeaderError(topic, partition, leader, epoch)
        if leader_epoch != replica.leader_epoch:
            raise FencedLeaderEpochError(topic, partition, leader_epoch, replica.leader_epoch)
        return replica

    def _track(self, replica: PartitionReplica, replica_id: int, fetch_offset: int) -> None:
        progress = replica.followers.get(replica_id)
        if progress is None:
            return  # not an assigned replica: serve it, but it is no ISR member
        now = self._clock.now_ms()
        log_end = replica.log.log_end_offset
        if fetch_offset >= log_end:
            progress.last_caught_up_ms = now
        elif fetch_offset >= progress.leader_end_at_last_fetch:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now
        progress.leader_end_at_last_fetch = log_end
        if replica_id not in replica.isr and not replica.isr_write_pending:
            epoch_start = replica.log.epochs.end_offset_for(replica.leader_epoch - 1, log_end)[1]
            if fetch_offset >= replica.high_watermark and fetch_offset >= max(epoch_start, 0):
                self._propose_isr(replica, tuple(sorted((*replica.isr, replica_id))), expand=True)
        self._advance(replica)

    async def serve_fetch(self, replica_id: int, items: list[tuple[str, int, int, int]], *,
                          max_wait_ms: int, max_bytes: int) -> list[ReplicaFetchOutcome]:
        """A follower's fetch: record its progress, then return batches from each fetch offset,
        long-polling up to ``max_wait_ms`` while there are none. A high watermark that moves
        meanwhile is answered within ``HW_LINGER_S`` (with the batches appended by then, if any:
        under load the next batch comes first, so it costs no extra round trip)."""
        now = self._loop.time()
        deadline = now + min(max_wait_ms, 5000) / 1000
        for topic, partition, fetch_offset, leader_epoch in items:
            try:
                self._track(self._check_fetch(topic, partition, leader_epoch), replica_id, fetch_offset)
            except LogstoreError:
                pass  # answered per partition below
        known = self._watermarks(items)
        keys = [(t, p) for t, p, _, _ in items]
        hw_deadline = 0.0
        while True:
            outcomes = self._read(items, max_bytes)
            now = self._loop.time()
            if now >= deadline or any(o.records or o.error for o in outcomes) or self.broker.closing:
                return outcomes
            if not hw_deadline and any(o.high_watermark > hw for o, hw in zip(outcomes, known, strict=True)):
                hw_deadline = now + HW_LINGER_S
            if hw_deadline:
                if now >= hw_deadline:
                    return outcomes
                await self.broker.wait_for_append(keys, min(deadline, hw_deadline) - now,
                                                  lambda: self._grew(items, None))
            elif not await self.broker.wait_for_append(keys, deadline - now, lambda: self._grew(items, known)):
                return self._read(items, max_bytes)

    def _watermarks(self, items: list[tuple[str, int, int, int]]) -> list[int]:
        replicas = [self._replica(t, p) for t, p, _, _ in items]
        return [r.high_watermark if r is not None else -1 for r in replicas]

    def _grew(self, items: list[tuple[str, int, int, int]], known: list[int] | None) -> bool:
        """New batches past a fetch offset, or a high watermark past the one known (if given)."""
        for index, (topic, partition, fetch_offset, _) in enumerate(items):
            replica = self._replica(topic, partition)
            if replica is not None and (replica.log.log_end_offset > fetch_offset or (
                    known is not None and replica.high_watermark > known[index])):
                return True
        return False

    def _read(self, items: list[tuple[str, int, int, int]], max_bytes: int) -> list[ReplicaFetchOutcome]:
        outcomes = []
        budget = max_bytes
        for topic, partition, fetch_offset, leader_epoch in items:
            outcome = ReplicaFetchOutcome(topic, partition)
            try:
                replica = self._check_fetch(topic, partition, leader_epoch)
                partition_log = replica.log
                outcome.high_watermark = replica.high_watermark
                outcome.log_start_offset = partition_log.log_start_offset
                outcome.log_end_offset = partition_log.log_end_offset
                if fetch_offset < partition_log.log_end_offset and budget > 0:
                    result = partition_log.read(fetch_offset, budget)
                    outcome.records = result.data
                    budget -= len(result.data)
                elif fetch_offset > partition_log.log_end_offset:
                    raise OffsetOutOfRangeError(
                        topic=topic, partition=partition, offset=fetch_offset,
                        log_start_offset=partition_log.log_start_offset,
                        log_end_offset=partition_log.log_end_offset,
                    )
            except LogstoreError as exc:
                outcome.error = exc
            outcomes.append(outcome)
        return outcomes

    def epoch_end_offset(self, topic: str, partition: int, requested_epoch: int, leader_epoch: int) -> tuple[int, int]:
        replica = self._check_fetch(topic, partition, leader_epoch)
        return replica.log.epochs.end_offset_for(requested_epoch, replica.log.log_end_offset)

    # -- ISR maintenance -------------------------------------------------------------------------

    def shrink_lagging(self) -> None:
        """Drop followers that have not caught up for replica_lag_time_ms from the ISR."""
        if self.fenced:
            return
        now = self._clock.now_ms()
        for replica in list(self.partitions.values()):
            if replica.role is not Role.LEADER or replica.isr_write_pending:
                continue
            lagging = {
                member for member in replica.isr
                if member != self.broker_id
                and now - replica.followers.get(member, FollowerProgress(0)).last_caught_up_ms
                > self.replica_lag_time_ms
            }
            if lagging:
                log.warning("%s/%d: shrinking the ISR, %s fell behind", replica.topic,
                            replica.partition, sorted(lagging))
                self._propose_isr(replica, tuple(m for m in replica.isr if m not in lagging), expand=False)

    def _propose_isr(self, replica: PartitionReplica, isr: tuple[int, ...], *, expand: bool) -> None:
        replica.isr_write_pending = True
        state = PartitionState(self.broker_id, replica.leader_epoch, isr, 0)
        self._loop.create_task(self._write_isr(replica, state, expand))

    async def _write_isr(self, replica: PartitionReplica, state: PartitionState, expand: bool) -> None:
        try:
            revision = await self.node.write_isr(replica.topic, replica.partition, state, replica.mod_revision)
            if revision is None:
                return  # the partition changed meanwhile (new leader, or the controller): re-read
            if replica.role is Role.LEADER and replica.leader_epoch == state.leader_epoch:
                replica.isr = state.isr
                replica.mod_revision = revision
                if expand:
                    self.isr_expands += 1
                else:
                    self.isr_shrinks += 1
                self._isr_changed(replica)
        except Exception as exc:
            log.warning("%s/%d: ISR change not written: %s", replica.topic, replica.partition, exc)
        finally:
            replica.isr_write_pending = False

    # -- introspection ---------------------------------------------------------------------------

    def under_replicated(self) -> int:
        return sum(
            1 for r in self.partitions.values() if r.role is Role.LEADER and len(r.isr) < len(r.replicas)
        )

    def follower_lag(self) -> dict[tuple[str, int, int], int]:
        """(topic, partition, follower) -> records the follower is behind, for partitions led here."""
        lag = {}
        for replica in self.partitions.values():
            if replica.role is Role.LEADER:
                end = replica.log.log_end_offset
                for member, progress in replica.followers.items():
                    lag[(replica.topic, replica.partition, member)] = max(end - max(progress.log_end_offset, 0), 0)
        return lag
