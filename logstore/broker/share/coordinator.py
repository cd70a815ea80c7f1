"""Every share group of the broker: share fetch (long poll), acknowledgements, admin calls.

A fetch first applies the acknowledgements it carries, then returns expired locks to Available,
then acquires up to ``max_records`` records over the partitions of the topics it names
(starting at a rotating partition so members spread), waiting up to ``max_wait_ms`` for records
to become available (an append, a release, a lock expiry or the end of a delay). Changes are
written by the state writer (``state_writer.py``): one delta per share-partition per event-loop
tick, all share-partitions' deltas of a tick in one append per state-log partition; the answer
waits until they (and any dead-letter copies) are durable as the topics' flush policies say.
A group exists once a member fetched for it or its config was set.

In a cluster (``attach``, see ``leadership.py``) a broker serves the share-partitions whose state
partition it leads: a fetch acquires from those partitions of its topics (``NotLeaderError`` when
it leads none of them), an acknowledgement of another partition is refused with
``NotLeaderError``, and the admin calls see the share-partitions led here only.

Threading: event loop thread only; the fsync waits run on the broker's executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from logstore.broker.positions import reset_target
from logstore.broker.share.clustered import ClusteredShares
from logstore.broker.share.config import ShareGroupConfig
from logstore.broker.share.dead_letter import dead_letter
from logstore.broker.share.group import ShareGroup
from logstore.broker.share.leadership import STATE_TOPIC_PREFIX, ShareCluster
from logstore.broker.share.partition import Change, SharePartition
from logstore.broker.share.state_log import ShareStateLog
from logstore.broker.share.state_writer import StateWriter
from logstore.broker.share.types import (
    AckKind,
    AckRange,
    AckResult,
    AcquiredPartition,
    ShareGroupInfo,
    ShareMemberInfo,
    SharePartitionInfo,
)
from logstore.broker.share.window import ACKNOWLEDGED, ACQUIRED, ARCHIVED, AVAILABLE, InFlightWindow
from logstore.broker.wakeups import Wakeups, wait
from logstore.errors import (
    GroupNotEmptyError,
    InvalidRequestError,
    LogstoreError,
    NotLeaderError,
    RecordNotAcquiredError,
    UnknownGroupError,
)
from logstore.storage import DataDir, PartitionLog, validate_topic_name
from logstore.storage.clock import Clock

log = logging.getLogger(__name__)

#: Changes of share-partitions not written yet, by (topic, partition).
Pending = dict[tuple[str, int], tuple[SharePartition, Change]]
#: Most records one fetch may ask for.
MAX_RECORDS_LIMIT = 100_000


def _resolver(future: asyncio.Future[bool]) -> Callable[[object], None]:
    """A done-callback that ends ``future``'s wait (resolved False: no append)."""
    def resolve(_: object) -> None:
        if not future.done():
            future.set_result(False)
    return resolve


class ShareCoordinator(ClusteredShares):
    def __init__(self, data_dir: DataDir, clock: Clock, partitions: int, wakeups: Wakeups,
                 executor: Executor, loop: asyncio.AbstractEventLoop, *, clustered: bool = False) -> None:
        """``clustered``: the broker is about to join a cluster (``attach``): the local
        ``__share_group_state`` is not loaded."""
        self.data_dir = data_dir
        self.clock = clock
        self._wakeups = wakeups
        self._executor = executor
        self._loop = loop
        self.state_log = ShareStateLog(data_dir, partitions)
        self.writer = StateWriter(self.state_log, loop, executor)
        self.groups: dict[str, ShareGroup] = {}
        self.cluster: ShareCluster | None = None
        if not clustered:
            loaded = self.state_log.load()
            for group_id, config in loaded.configs.items():
                self.groups[group_id] = ShareGroup(group_id, ShareGroupConfig.from_dict(config))
            # sequence 0: each share-partition's first write is a snapshot, at the place this
            # version writes it (``log_for``), which may not be where it was loaded from
            self._add_windows({key: (window, generation, 0)
                               for key, (window, generation, _) in loaded.windows.items()})

    # -- helpers ------------------------------------------------------------------------------

    def group(self, group_id: str) -> ShareGroup:
        validate_topic_name(group_id, kind="group")
        group = self.groups.get(group_id)
        if group is None:
            raise UnknownGroupError(group_id)
        return group

    def _share_partition(self, group: ShareGroup, partition_log: PartitionLog) -> SharePartition:
        key = (partition_log.topic, partition_log.partition)
        sp = group.partitions.get(key)
        if sp is None:
            start = (partition_log.log_start_offset if group.config.auto_offset_reset == "earliest"
                     else self._readable_end(partition_log))
            sp = group.partitions[key] = SharePartition(group.group_id, key[0], key[1], InFlightWindow(start))
        return sp

    def _persist(self, group: ShareGroup, sp: SharePartition, change: Change, *, snapshot: bool = False) -> None:
        """Have the change written at the end of this tick (a delta, or a snapshot when due);
        its dead-letter copies are written now, before the delta that archives them."""
        if not change.changed and not change.archived and not snapshot and sp.sequence:
            return
        source = self.data_dir.log(sp.topic, sp.partition)
        topic = group.config.dead_letter_topic
        for archived in change.archived:
            if topic and self.cluster is not None:
                target = self.cluster.dead_letter_target(topic, sp.partition)
                if target is None:
                    log.warning("group %s: %d records of %s/%d archived without a dead-letter copy: this "
                                "broker leads no partition of %s", group.group_id, len(archived.offsets),
                                sp.topic, sp.partition, topic)
                    continue
                written = dead_letter(self.data_dir, topic, source, archived.offsets, archived.counts,
                                      archived.error, target=target[0], leader_epoch=target[1])
            elif topic:
                written = dead_letter(self.data_dir, topic, source, archived.offsets, archived.counts, archived.error)
            else:
                continue
            if written is not None:
                self.writer.add_write(written)
        change.archived.clear()
        self.writer.mark((group.group_id, sp.topic, sp.partition), sp, snapshot=snapshot)
        if change.freed or snapshot:  # (appends wake waiters themselves)
            self._wakeups.wake([(sp.topic, sp.partition)])
        change.changed = change.freed = False

    def _expire(self, group: ShareGroup, sps: Iterable[SharePartition], now_ms: int) -> None:
        for sp in sps:
            change = Change()
            if sp.expire(now_ms, group.config, change):
                self._persist(group, sp, change)

    def expire(self) -> None:
        """Housekeeping: return expired locks everywhere (written at the end of the tick)."""
        self.release_unled()
        now_ms = self.clock.now_ms()
        for group in self.groups.values():
            self._expire(group, list(group.partitions.values()), now_ms)

    # -- acknowledging ------------------------------------------------------------------------

    @staticmethod
    def validate_acks(acks: Sequence[AckRange]) -> None:
        for ack in acks:
            where = f"{ack.topic}/{ack.partition}@{ack.first_offset}..{ack.last_offset}"
            if ack.partition < 0 or ack.first_offset < 0 or ack.last_offset < ack.first_offset:
                raise InvalidRequestError(
                    f"acknowledgement {where}: needs 0 <= first_offset <= last_offset and a "
                    f"partition >= 0", field="acknowledgements")
            if not isinstance(ack.kind, AckKind):
                raise InvalidRequestError(f"acknowledgement {where}: unknown kind {ack.kind!r}", field="kind")
            if ack.delay_ms is not None and ack.delay_ms < 0:
                raise InvalidRequestError(
                    f"acknowledgement {where}: delay_ms must not be negative, not {ack.delay_ms}",
                    field="delay_ms")
            if ack.delay_ms is not None and ack.kind is not AckKind.RELEASE:
                raise InvalidRequestError(f"acknowledgement {where}: delay_ms is for RELEASE only",
                                          field="delay_ms")
            validate_topic_name(ack.topic)

    def _acknowledge(self, group: ShareGroup, owner: int, acks: Sequence[AckRange], lock_ms: int,
                     now_ms: int, pending: Pending | None = None) -> list[AckResult]:
        """Apply ``acks``; their changes are written now, or left in ``pending`` for the
        acquisition that follows to write in the same delta."""
        results = []
        changes: Pending = {} if pending is None else pending
        elsewhere: dict[tuple[str, int], LogstoreError] = {}
        for key in {(a.topic, a.partition) for a in acks}:
            try:
                self._take_over(*key, write=True)
            except LogstoreError as exc:  # (a cluster) served by another broker
                elsewhere[key] = exc
                continue
            sp = group.partitions.get(key)
            if sp is not None:
                self._expire(group, [sp], now_ms)
        for ack in acks:
            sp = group.partitions.get((ack.topic, ack.partition))
            error: LogstoreError | None = elsewhere.get((ack.topic, ack.partition))
            if error is not None:
                pass
            elif sp is None:
                error = RecordNotAcquiredError(
                    f"group {group.group_id!r} never delivered {ack.topic}/{ack.partition}",
                    group_id=group.group_id, topic=ack.topic, partition=ack.partition,
                    offset=ack.first_offset, state="never delivered")
            else:
                error = sp.check(ack, owner, now_ms)
                if error is None:
                    _, change = changes.setdefault((ack.topic, ack.partition), (sp, Change()))
                    sp.apply(ack, now_ms, lock_ms or group.config.lock_ms, group.config, change)
            results.append(AckResult(ack.topic, ack.partition, ack.first_offset, ack.last_offset, error))
        if pending is None:
            for sp, change in changes.values():
                self._persist(group, sp, change)
        return results

    async def acknowledge(self, group_id: str, member_id: str, acks: Sequence[AckRange], *,
                          lock_ms: int = 0, leave: bool = False) -> list[AckResult]:
        """Apply ``acks`` (each range all or nothing: a range with a record the member does not
        hold is refused whole, with RecordNotAcquiredError as its result); with ``leave`` the
        member's remaining records become Available at once. Answered once durable. In a
        cluster, ranges of partitions led elsewhere are refused with ``NotLeaderError`` (the call
        itself, when this broker does not know the group)."""
        self._check_member(member_id, lock_ms)
        self.validate_acks(acks)
        if self.cluster is not None and group_id not in self.groups:
            for key in dict.fromkeys((a.topic, a.partition) for a in acks):
                self._take_over(*key)  # NotLeaderError, or its state (and the group) loaded
        group = self.group(group_id)
        now_ms = self.clock.now_ms()
        owner = group.owner(member_id, now_ms)
        results = self._acknowledge(group, owner, acks, lock_ms, now_ms)
        if leave:
            self.release_unled()  # (a cluster: only what is led here is released here)
            for sp in group.partitions.values():
                change = Change()
                if sp.release_member(owner, change):
                    self._persist(group, sp, change)
            group.forget(member_id)
        await self.writer.commit()
        await self.settled([(a.topic, a.partition) for a in acks])
        return results

    # -- fetching ------------------------------------------------------------------------------

    @staticmethod
    def _check_member(member_id: str, lock_ms: int) -> None:
        if not member_id:
            raise InvalidRequestError("a share group member needs a member_id (any unique string)",
                                      field="member_id")
        if lock_ms < 0:
            raise InvalidRequestError(f"lock_ms must not be negative, not {lock_ms}", field="lock_ms")

    def _logs(self, topics: Sequence[str]) -> list[PartitionLog]:
        """The partitions of ``topics`` served here (in a cluster those whose state partition
        this broker leads, with min ISR: ``NotLeaderError`` or ``NotEnoughReplicasError`` when
        there are none)."""
        logs = []
        for topic in dict.fromkeys(topics):
            validate_topic_name(topic)
            if topic.startswith(STATE_TOPIC_PREFIX):
                raise InvalidRequestError(f"{topic!r} is internal: share groups cannot read it", field="topics")
            logs += self.data_dir.topic(topic).logs
        if self.cluster is None:
            return logs
        served = []
        refusal: LogstoreError | None = None
        for partition_log in logs:
            try:
                self._take_over(partition_log.topic, partition_log.partition, write=True)
            except LogstoreError as exc:
                if refusal is None or isinstance(refusal, NotLeaderError):
                    refusal = exc
                continue
            served.append(partition_log)
        if not served and refusal is not None:
            raise refusal
        return served

    def _acquire(self, group: ShareGroup, owner: int, logs: list[PartitionLog], max_records: int,
                 max_bytes: int, lock_ms: int, pending: Pending) -> list[AcquiredPartition]:
        """Acquire over ``logs``; each share-partition's changes (with those ``pending`` from the
        acknowledgements of the same fetch) are one delta."""
        now_ms = self.clock.now_ms()
        outcomes = []
        turn = group.turn % len(logs)
        group.turn += 1
        left_records, left_bytes = max_records, max_bytes
        for partition_log in logs[turn:] + logs[:turn]:
            if left_records <= 0 or left_bytes <= 0:
                break
            sp = self._share_partition(group, partition_log)
            _, change = pending.pop((sp.topic, sp.partition), (sp, Change()))
            sp.expire(now_ms, group.config, change)
            out = sp.acquire(partition_log, owner, now_ms, lock_ms, group.config, left_records, left_bytes, change,
                             self._readable_end(partition_log) if self.cluster is not None else None)
            self._persist(group, sp, change)
            if len(out.first_offsets):
                outcomes.append(out)
                left_records -= out.record_count
                left_bytes -= sum(len(r) for r in out.records)
        for sp, change in pending.values():
            self._persist(group, sp, change)
        pending.clear()
        return outcomes

    def _next_change_s(self, group: ShareGroup, logs: list[PartitionLog]) -> float | None:
        times = []
        now_ms = self.clock.now_ms()
        for partition_log in logs:
            sp = group.partitions.get((partition_log.topic, partition_log.partition))
            if sp is not None:
                when = sp.window.next_deadline_ms(now_ms)
                if when is not None:
                    times.append(when)
        if not times:
            return None
        return max(0.0, (min(times) - now_ms) / 1000)

    async def fetch(
        self, group_id: str, member_id: str, topics: Sequence[str], *,
        acks: Sequence[AckRange] = (), max_records: int = 500, max_bytes: int = 1 << 20,
        max_wait_ms: int = 0, lock_ms: int = 0, closing: Callable[[], bool] = lambda: False,
        interrupt: asyncio.Future[None] | None = None,
    ) -> tuple[list[AckResult], list[AcquiredPartition]]:
        """Apply ``acks``, then acquire records (waiting up to ``max_wait_ms`` for some; the
        acknowledgements are written at the end of this tick, the answer waits for their
        durability). ``interrupt`` done ends the wait (the answer then holds nothing): a later
        request of the same stream carries acknowledgements, which must not queue behind it."""
        self._check_member(member_id, lock_ms)
        if not topics:
            raise InvalidRequestError("a share fetch needs at least one topic", field="topics")
        if not 1 <= max_records <= MAX_RECORDS_LIMIT:
            raise InvalidRequestError(f"max_records must be within 1..{MAX_RECORDS_LIMIT}, not {max_records}",
                                      field="max_records")
        if max_bytes < 0 or max_wait_ms < 0:
            raise InvalidRequestError("max_bytes and max_wait_ms must not be negative", field="max_wait_ms")
        validate_topic_name(group_id, kind="group")
        self.validate_acks(acks)
        logs = self._logs(topics)
        group = self.groups.get(group_id)
        if group is None:
            group = self._new_group(group_id)
            log.info("share group %s created", group_id)
        now_ms = self.clock.now_ms()
        owner = group.owner(member_id, now_ms)
        lock = lock_ms or group.config.lock_ms
        pending: Pending = {}
        results = self._acknowledge(group, owner, acks, lock_ms, now_ms, pending) if acks else []
        deadline = self._loop.time() + max_wait_ms / 1000
        keys = [(lg.topic, lg.partition) for lg in logs]
        while True:
            outcomes = self._acquire(group, owner, logs, max_records, max_bytes or (1 << 20), lock, pending)
            remaining = deadline - self._loop.time()
            if outcomes or remaining <= 0 or closing() or (interrupt is not None and interrupt.done()):
                break
            future = self._wakeups.register(keys)
            end_wait = _resolver(future)
            if interrupt is not None:
                interrupt.add_done_callback(end_wait)
            try:
                change_s = self._next_change_s(group, logs)
                await wait(future, remaining if change_s is None else min(remaining, change_s + 0.001))
            finally:
                self._wakeups.unregister(keys, future)
                if interrupt is not None:
                    interrupt.remove_done_callback(end_wait)
        group.last_seen_ms[member_id] = self.clock.now_ms()
        await self.writer.commit()
        await self.settled([*keys, *((a.topic, a.partition) for a in acks)])
        return results, outcomes

    # -- admin ---------------------------------------------------------------------------------

    def list_groups(self) -> list[tuple[str, int, int]]:
        """(group, members seen within a lock, records acquired) of every share group."""
        self._take_over_all()
        now_ms = self.clock.now_ms()
        result = []
        for name in sorted(self.groups):
            group = self.groups[name]
            active = sum(1 for seen in group.last_seen_ms.values() if now_ms - seen <= group.config.lock_ms)
            result.append((name, active, sum(sp.acquired for sp in group.partitions.values())))
        return result

    def describe(self, group_id: str) -> ShareGroupInfo:
        """In a cluster: the share-partitions led here only."""
        self._take_over_all()
        if self.cluster is not None and group_id in self.cluster.configs and group_id not in self.groups:
            self._new_group(group_id)
        group = self.group(group_id)
        now_ms = self.clock.now_ms()
        self._expire(group, list(group.partitions.values()), now_ms)
        partitions = []
        for (topic, partition), sp in sorted(group.partitions.items()):
            window = sp.window
            try:
                end = self._readable_end(self.data_dir.log(topic, partition))
            except LogstoreError:
                continue
            counts = window.counts()
            pending = window.state < ACKNOWLEDGED
            delivered = window.since_ms[pending & (window.count > 0)]
            partitions.append(SharePartitionInfo(
                topic, partition, window.start_offset, window.end_offset, end,
                int(counts[AVAILABLE]) + max(0, end - window.end_offset), int(counts[ACQUIRED]),
                int(counts[ACKNOWLEDGED]), int(counts[ARCHIVED]),
                int(np.count_nonzero((window.state == AVAILABLE) & (window.after_ms > now_ms))),
                int(now_ms - delivered.min()) if len(delivered) else -1,
                sp.redeliveries, sp.dead_lettered, sp.lock_expiries,
            ))
        members = [
            ShareMemberInfo(member_id, group.last_seen_ms.get(member_id, 0), group.acquired_by(owner))
            for member_id, owner in sorted(group.members.items())
            if now_ms - group.last_seen_ms.get(member_id, 0) <= group.config.lock_ms or group.acquired_by(owner)
        ]
        return ShareGroupInfo(group_id, group.config.describe(), members, partitions)

    async def alter_config(self, group_id: str, set_keys: dict[str, Any], reset_keys: Sequence[str]) -> ShareGroupConfig:
        """Change a group's config (creating the group); durable when this returns."""
        validate_topic_name(group_id, kind="group")
        group = self.groups.get(group_id) or ShareGroup(group_id)
        defaults = ShareGroupConfig()
        changes = dict(set_keys)
        for key in reset_keys:
            normalized = key.replace("-", "_").replace(".", "_")
            if normalized == "backoff":
                normalized = "backoff_ms"
            if normalized not in ShareGroupConfig.keys():
                ShareGroupConfig().with_changes({key: ""})  # raises InvalidConfigError naming it
            value = getattr(defaults, normalized)
            changes[normalized] = list(value) if isinstance(value, tuple) else value
        config = group.config.with_changes(changes)
        if config.dead_letter_topic:
            validate_topic_name(config.dead_letter_topic)
        if self.cluster is not None:
            await self.cluster.store_config(group_id, config.to_dict())
            self.cluster.configs[group_id] = config.to_dict()
        else:
            await self.writer.durable([self.state_log.write_config(group_id, config.to_dict())])
        group.config = config
        self.groups[group_id] = group
        return config

    async def reset(self, group_id: str, topic: str, partitions: Sequence[int], spec: str,
                    offset: int = 0) -> list[SharePartitionInfo]:
        """Move the start offset of the group's share-partitions of ``topic`` to earliest,
        latest or ``offset``, forgetting their windows. Refused while records are acquired.
        In a cluster: of the partitions led here (``NotLeaderError`` when none is)."""
        self._take_over_all()
        group = self.group(group_id)
        validate_topic_name(topic)
        count = self.data_dir.topic(topic).partitions
        chosen = list(partitions) or list(range(count))
        if self.cluster is not None:
            served = [p for p in chosen if 0 <= p < count and self.cluster.loaded.get((topic, p)) is not None]
            if not served:
                self._take_over(topic, chosen[0] if chosen else 0)  # raises NotLeaderError
            chosen = served
        now_ms = self.clock.now_ms()
        self._expire(group, list(group.partitions.values()), now_ms)
        held = sum(sp.acquired for (t, _), sp in group.partitions.items() if t == topic)
        if held:
            raise GroupNotEmptyError(group_id, sum(1 for seen in group.last_seen_ms.values()
                                                   if now_ms - seen <= group.config.lock_ms) or 1)
        targets = []
        for partition in chosen:
            if spec not in ("earliest", "latest", "offset"):
                raise InvalidRequestError(f"unknown reset spec {spec!r} (earliest, latest, offset)", field="spec")
            partition_log = self.data_dir.log(topic, partition)
            target = reset_target(partition_log, spec, offset)
            targets.append((partition_log, target))
        for partition_log, target in targets:
            sp = self._share_partition(group, partition_log)
            sp.window.reset(target)
            self._persist(group, sp, Change(), snapshot=True)
        await self.writer.commit()
        return [p for p in self.describe(group_id).partitions if p.topic == topic and p.partition in chosen]

    def topic_deleted(self, topic: str) -> None:
        """Forget the share-partitions of a deleted topic (their keys are tombstoned)."""
        self.writer.forget(lambda key: key[1] != topic)
        for group in self.groups.values():
            gone = [key for key in group.partitions if key[0] == topic]
            for key in gone:
                del group.partitions[key]
            if gone and self.cluster is None:  # (a cluster deletes the topic's state topic)
                self.state_log.delete_partitions(group.group_id, gone)
        if self.cluster is not None:
            for key in [k for k in self.cluster.loaded if k[0] == topic]:
                del self.cluster.loaded[key]

    def stats(self) -> list[tuple[str, SharePartition]]:
        """(group, share-partition) of every share-partition (metrics)."""
        return [(g.group_id, sp) for g in self.groups.values() for sp in g.partitions.values()]
