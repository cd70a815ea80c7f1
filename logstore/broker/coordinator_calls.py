"""The coordinators' side of the broker: consumer groups, idempotent producers and transactions,
and share groups — thin methods that check the broker is open and names are valid, then call the
coordinator (``groups/``, ``transactions.py``, ``share/``). A mixin of ``Broker``, which owns the
state named below; split from ``broker.py`` so that each file keeps to one concept.

Threading: event loop thread only, like the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from logstore.broker.config import BrokerConfig
from logstore.broker.groups.coordinator import GroupCoordinator, HeartbeatResult
from logstore.broker.groups.offsets import OffsetStore
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC, partition_for
from logstore.broker.pipelined_end import end_after_batches
from logstore.broker.positions import reset_target
from logstore.broker.producer_state import PartitionProducerState
from logstore.broker.replication import Replication
from logstore.broker.share import (
    AckRange,
    AcquiredPartition,
    ShareCoordinator,
    ShareGroupConfig,
    ShareGroupInfo,
)
from logstore.broker.share.types import AckResult, SharePartitionInfo
from logstore.broker.transactions import TransactionCoordinator
from logstore.broker.types import (
    GroupInfo,
    MemberInfo,
    OffsetInfo,
)
from logstore.broker.wakeups import Wakeups
from logstore.errors import (
    GroupNotEmptyError,
    LogstoreError,
    NotCoordinatorError,
    NotLeaderError,
    OffsetOutOfRangeError,
    UnknownGroupError,
    UnstableOffsetCommitError,
)
from logstore.storage import DataDir, PartitionLog, validate_topic_name


class CoordinatorCalls:
    """Provided by ``Broker``."""

    replication: Replication | None
    data_dir: DataDir
    config: BrokerConfig
    closing: bool
    offsets: OffsetStore
    groups: GroupCoordinator
    transactions: TransactionCoordinator
    shares: ShareCoordinator
    _wakeups: Wakeups
    _producer_states: dict[tuple[str, int], PartitionProducerState]

    def _check_open(self) -> None:
        raise NotImplementedError

    def producer_state(self, partition_log: PartitionLog) -> PartitionProducerState:
        raise NotImplementedError

    # -- where a group is coordinated (a cluster) --------------------------------------------------

    def _coordinate(self, group_id: str, *, write: bool = False) -> None:
        """In a cluster, this broker coordinates ``group_id`` only while it leads the group's
        ``__consumer_offsets`` partition (else ``NotCoordinatorError``); the partition's state is
        loaded the first time it is used at a new leader epoch, and the memberships of its groups
        are forgotten then (their members rejoin). A write also needs ``min_insync_replicas`` in
        the partition's ISR (else ``NotEnoughReplicasError``, nothing written)."""
        replication = self.replication
        if replication is None:
            return
        partition = self.offsets.partition_of(group_id)
        try:
            self._take_over(partition)
        except NotLeaderError as exc:
            raise NotCoordinatorError(group_id, exc.leader_id) from None
        if write:
            replication.check_min_isr(OFFSETS_TOPIC, partition)

    def _take_over(self, partition: int) -> None:
        """Load ``partition``'s state if this broker leads it at a new leader epoch (raises
        ``NotLeaderError`` if it does not lead it), forgetting its groups' memberships then."""
        if self.offsets.current(partition):
            count = self.offsets.partitions
            self.groups.forget_where(lambda g: partition_for(g, count) == partition)

    def take_over_offsets(self, partition: int) -> None:
        """``_take_over`` for a transaction marker of the partition (``txn_markers``)."""
        self._take_over(partition)

    def _take_over_all(self) -> None:
        """``_take_over`` every partition this broker leads (in a cluster)."""
        if self.replication is None:
            return
        for partition in range(self.offsets.partitions):
            try:
                self._take_over(partition)
            except LogstoreError:
                pass  # led by another broker

    def release_unled_groups(self) -> None:
        """Unload the groups of the offsets partitions this broker stopped leading (a cluster;
        housekeeping): their committed offsets and memberships."""
        released = set(self.offsets.release_unled())
        if released:
            count = self.offsets.partitions
            self.groups.forget_where(lambda g: partition_for(g, count) in released)

    def _coordinates(self, group_id: str) -> bool:
        """Whether this broker coordinates ``group_id`` (always on a single node)."""
        try:
            self._coordinate(group_id)
        except LogstoreError:
            return False
        return True

    async def offsets_replicated(self, group_id: str) -> None:
        """acks=all for a group's writes: wait until its partition's high watermark covers what
        was appended to it so far (returns at once on a single node). Raises
        ``NotCoordinatorError`` if this broker stopped leading the partition meanwhile."""
        if self.replication is None:
            return
        partition = self.offsets.partition_of(group_id)
        end = self.data_dir.log(OFFSETS_TOPIC, partition).log_end_offset
        try:
            await self.replication.wait_replicated(OFFSETS_TOPIC, partition, end)
        except NotLeaderError as exc:
            raise NotCoordinatorError(group_id, exc.leader_id) from None

    def _coordinate_transaction(self, transactional_id: str, *, write: bool = False) -> None:
        """In a cluster, this broker coordinates every transactional id while it leads
        ``__transaction_state`` (its one partition; else ``NotCoordinatorError``), loading its
        state the first time it is used at a new leader epoch. A write also needs
        ``min_insync_replicas`` in the partition's ISR (else ``NotEnoughReplicasError``)."""
        replication = self.replication
        if replication is None:
            return
        try:
            self.transactions.current()
        except NotLeaderError as exc:
            raise NotCoordinatorError(transactional_id, exc.leader_id) from None
        if write:
            replication.check_min_isr(TRANSACTIONS_TOPIC, 0)

    async def transactions_replicated(self, transactional_id: str) -> None:
        """acks=all for the transaction state: wait until the high watermark of
        ``__transaction_state`` covers what was appended to it so far (at once on a single
        node); ``NotCoordinatorError`` if this broker stopped leading it meanwhile."""
        if self.replication is None:
            return
        end = self.data_dir.log(TRANSACTIONS_TOPIC, 0).log_end_offset
        try:
            await self.replication.wait_replicated(TRANSACTIONS_TOPIC, 0, end)
        except NotLeaderError as exc:
            raise NotCoordinatorError(transactional_id, exc.leader_id) from None

    # -- consumer groups ----------------------------------------------------------------------------

    def group_heartbeat(self, group_id: str, member_id: str, member_epoch: int, **options: Any) -> HeartbeatResult:
        self._check_open()
        validate_topic_name(group_id, kind="group")
        self._coordinate(group_id)
        for topic in options.get("topics") or ():
            validate_topic_name(topic)
        return self.groups.heartbeat(group_id, member_id, member_epoch, **options)

    def _offset_info(self, group_id: str, topic: str, partition: int) -> OffsetInfo:
        committed = self.offsets.get(group_id, topic, partition)
        try:
            partition_log = self.data_dir.log(topic, partition)
        except LogstoreError as exc:
            return OffsetInfo(topic, partition, error=exc)
        end = partition_log.log_end_offset
        if committed is None:
            return OffsetInfo(topic, partition, -1, "", end, end - partition_log.log_start_offset)
        return OffsetInfo(
            topic, partition, committed.offset, committed.metadata, end,
            max(end - committed.offset, 0), committed.commit_timestamp_ms,
        )

    def commit_offsets(
        self, group_id: str, member_id: str, member_epoch: int, offsets: Sequence[tuple[str, int, int, str]]
    ) -> list[tuple[str, int, LogstoreError | None]]:
        """Commit (topic, partition, offset, metadata) for a group. A fenced or unknown member
        is refused whole; a partition not assigned to it, unknown, or an offset outside
        [log start, log end] is refused for that partition only."""
        self._check_open()
        validate_topic_name(group_id, kind="group")
        self._coordinate(group_id, write=True)
        group = self.groups.groups.get(group_id)
        self.groups.check_member(group_id, member_id, member_epoch, [])
        results: list[tuple[str, int, LogstoreError | None]] = []
        accepted = []
        for topic, partition, offset, metadata in offsets:
            try:
                if member_id and group is not None:
                    self.groups.check_member(group_id, member_id, member_epoch, [(topic, partition)])
                partition_log = self.data_dir.log(topic, partition)
                limit = self._commit_limit(partition_log)
                if offset < 0 or (limit is not None and offset > limit):
                    raise OffsetOutOfRangeError(
                        topic=topic, partition=partition, offset=offset,
                        log_start_offset=partition_log.log_start_offset,
                        log_end_offset=partition_log.log_end_offset,
                    )
                accepted.append((topic, partition, offset, metadata))
                results.append((topic, partition, None))
            except LogstoreError as exc:
                results.append((topic, partition, exc))
        self.offsets.commit(group_id, accepted)
        return results

    def _commit_limit(self, partition_log: PartitionLog) -> int | None:
        """The highest offset a commit of the partition may name: its log end — in a cluster only
        where this broker leads it (a follower's copy may lag the leader consumers read from, and
        a broker may hold no copy at all), else None (no upper bound, as in Kafka)."""
        if self.replication is not None:
            try:
                self.replication.leader_epoch(partition_log.topic, partition_log.partition)
            except LogstoreError:
                return None
        return partition_log.log_end_offset

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]] | None = None, require_stable: bool = False
    ) -> list[OffsetInfo]:
        self._check_open()
        validate_topic_name(group_id, kind="group")
        self._coordinate(group_id)
        wanted = list(partitions) if partitions else sorted(self.offsets.committed(group_id))
        if require_stable:
            pending = (self.transactions.pending_offsets(group_id) | self.offsets.staged_partitions(group_id)) & set(wanted)
            if pending:
                topic, partition = sorted(pending)[0]
                raise UnstableOffsetCommitError(
                    f"group {group_id!r} has a transactional offset commit pending for {topic}/{partition}",
                    group_id=group_id, topic=topic, partition=partition,
                )
        return [self._offset_info(group_id, topic, partition) for topic, partition in wanted]

    def list_groups(self) -> list[tuple[str, str, int]]:
        """Every group (in a cluster: every group this broker coordinates)."""
        self._check_open()
        self._take_over_all()
        names = set(self.offsets.groups()) | set(self.groups.groups)
        names = {n for n in names if self.offsets.leads_loaded(self.offsets.partition_of(n))}
        result = []
        for name in sorted(names):
            group = self.groups.groups.get(name)
            state = group.state if group is not None else "empty"
            result.append((name, state, len(group.members) if group else 0))
        return result

    def describe_group(self, group_id: str) -> GroupInfo:
        self._check_open()
        validate_topic_name(group_id, kind="group")
        self._coordinate(group_id)
        group = self.groups.groups.get(group_id)
        committed = self.offsets.committed(group_id)
        if group is None and not committed:
            raise UnknownGroupError(group_id)
        members = []
        partitions = set(committed)
        if group is not None:
            for member in sorted(group.members.values(), key=lambda m: m.member_id):
                members.append(
                    MemberInfo(
                        member.member_id, member.instance_id, member.member_epoch, list(member.topics),
                        sorted(member.assigned), sorted(member.revoking),
                    )
                )
                partitions |= member.assigned | member.revoking
        return GroupInfo(
            group_id,
            group.state if group is not None else "empty",
            group.assignor if group is not None else "",
            group.group_epoch if group is not None else 0,
            members,
            [self._offset_info(group_id, t, p) for t, p in sorted(partitions)],
        )

    def delete_group(self, group_id: str) -> None:
        self._check_open()
        validate_topic_name(group_id, kind="group")
        self._coordinate(group_id, write=True)
        active = self.groups.active_members(group_id)
        if active:
            raise GroupNotEmptyError(group_id, active)
        if group_id not in self.groups.groups and not self.offsets.committed(group_id):
            raise UnknownGroupError(group_id)
        self.offsets.delete_group(group_id)
        self.groups.forget(group_id)

    def reset_offsets(
        self, group_id: str, topic: str, partitions: Sequence[int], spec: str,
        offset: int = 0, timestamp_ms: int = 0, dry_run: bool = False,
    ) -> list[OffsetInfo]:
        """Move an inactive group's offsets of ``topic`` to earliest, latest, an offset or a time."""
        self._check_open()
        validate_topic_name(group_id, kind="group")
        validate_topic_name(topic)  # a bad argument is refused whatever the group's state
        self._coordinate(group_id, write=not dry_run)
        active = self.groups.active_members(group_id)
        if active:
            raise GroupNotEmptyError(group_id, active)
        count = self.data_dir.topic(topic).partitions
        chosen = list(partitions) or list(range(count))
        entries = []
        for partition in chosen:
            target = reset_target(self.data_dir.log(topic, partition), spec, offset, timestamp_ms)
            entries.append((topic, partition, target, ""))
        if not dry_run:
            self.offsets.commit(group_id, entries)
            return [self._offset_info(group_id, t, p) for t, p, _, _ in entries]
        return [
            OffsetInfo(t, p, o, "", self.data_dir.log(t, p).log_end_offset,
                       self.data_dir.log(t, p).log_end_offset - o)
            for t, p, o, _ in entries
        ]

    # -- idempotent producers and transactions -----------------------------------------------------

    def init_producer_id(self, transactional_id: str = "", timeout_ms: int = 0) -> tuple[int, int]:
        self._check_open()
        if transactional_id:
            validate_topic_name(transactional_id, kind="transactional id")
            self._coordinate_transaction(transactional_id, write=True)
        producer_id, epoch = self.transactions.init_producer_id(transactional_id, timeout_ms)
        if epoch:
            for state in self._producer_states.values():
                state.fence(producer_id, epoch)  # the old instance is refused everywhere
        return producer_id, epoch

    def add_partitions_to_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int,
        partitions: Sequence[tuple[str, int]], groups: Sequence[str] = (),
    ) -> None:
        """Add partitions (and the offsets partitions of ``groups``) to the open transaction.
        In a cluster only the transaction coordinator takes it, before the transaction's first
        batch to a partition (and before ``txn_offset_commit`` to a group)."""
        self._check_open()
        validate_topic_name(transactional_id, kind="transactional id")
        for topic, _ in partitions:  # a bad argument is refused whatever the transaction's state
            validate_topic_name(topic)
        for group_id in groups:
            validate_topic_name(group_id, kind="group")
        self._coordinate_transaction(transactional_id, write=True)
        self.transactions.add_partitions(
            transactional_id, producer_id, producer_epoch, list(partitions), list(groups)
        )

    def txn_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str,
        member_id: str, member_epoch: int, offsets: Sequence[tuple[str, int, int, str]],
    ) -> None:
        self._check_open()
        validate_topic_name(transactional_id, kind="transactional id")
        validate_topic_name(group_id, kind="group")
        for topic, _, _, _ in offsets:
            validate_topic_name(topic)
        if self.replication is not None:
            # a cluster: the group's coordinator stages them until the transaction's marker
            self._coordinate(group_id, write=True)
        if member_id:
            self.groups.check_member(group_id, member_id, member_epoch, [(t, p) for t, p, _, _ in offsets])
        for topic, partition, offset, _ in offsets:
            partition_log = self.data_dir.log(topic, partition)
            limit = self._commit_limit(partition_log)
            if offset < 0 or (limit is not None and offset > limit):
                raise OffsetOutOfRangeError(
                    topic=topic, partition=partition, offset=offset,
                    log_start_offset=partition_log.log_start_offset,
                    log_end_offset=partition_log.log_end_offset,
                )
        if self.replication is not None:
            self.offsets.stage(group_id, producer_id, producer_epoch, list(offsets))
            return
        self.transactions.add_offsets(transactional_id, producer_id, producer_epoch, group_id, list(offsets))

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> None:
        self._check_open()
        validate_topic_name(transactional_id, kind="transactional id")
        self._coordinate_transaction(transactional_id, write=True)
        self.transactions.end(transactional_id, producer_id, producer_epoch, commit)
        self._wakeups.wake_all()

    def end_txn_after_batches(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
        sequences: Sequence[tuple[str, int, int]],
    ) -> None:
        """``end_txn`` pipelined behind the transaction's batches: a commit checks first that
        every batch the producer counted in ``sequences`` (topic, partition, next sequence) was
        appended (``pipelined_end``)."""
        self._check_open()
        validate_topic_name(transactional_id, kind="transactional id")
        self._coordinate_transaction(transactional_id, write=True)

        def appended(tp: tuple[str, int]) -> int | None:
            if not self.data_dir.has_topic(tp[0]):
                return None
            try:
                partition_log = self.data_dir.log(*tp)
            except LogstoreError:
                return None
            return self.producer_state(partition_log).next_sequence(producer_id, producer_epoch)

        wanted = {(topic, partition): sequence for topic, partition, sequence in sequences}
        end_after_batches(
            self.transactions, transactional_id, producer_id, producer_epoch, commit, wanted, appended
        )
        self._wakeups.wake_all()

    # -- share groups (the logic is in broker/share/) -----------------------------------------------

    async def share_fetch(
        self, group_id: str, member_id: str, topics: Sequence[str], **options: Any
    ) -> tuple[list[AckResult], list[AcquiredPartition]]:
        self._check_open()
        options["max_wait_ms"] = min(options.get("max_wait_ms", 0), self.config.max_wait_ms)
        options["max_bytes"] = min(options.get("max_bytes") or (1 << 20), self.config.max_fetch_bytes)
        return await self.shares.fetch(group_id, member_id, topics, closing=lambda: self.closing, **options)

    async def share_acknowledge(
        self, group_id: str, member_id: str, acks: Sequence[AckRange], **options: Any
    ) -> list[AckResult]:
        self._check_open()
        return await self.shares.acknowledge(group_id, member_id, acks, **options)

    def list_share_groups(self) -> list[tuple[str, int, int]]:
        self._check_open()
        return self.shares.list_groups()

    def describe_share_group(self, group_id: str) -> ShareGroupInfo:
        self._check_open()
        return self.shares.describe(group_id)

    async def alter_share_group_config(
        self, group_id: str, set_keys: dict[str, Any], reset_keys: Sequence[str]
    ) -> ShareGroupConfig:
        self._check_open()
        return await self.shares.alter_config(group_id, set_keys, reset_keys)

    async def reset_share_group(
        self, group_id: str, topic: str, partitions: Sequence[int], spec: str, offset: int = 0
    ) -> list[SharePartitionInfo]:
        self._check_open()
        return await self.shares.reset(group_id, topic, partitions, spec, offset)
