"""The broker: topics, produce, long-poll fetch, subscriptions and offsets over a ``DataDir``.

One call per layer: the server turns a request into these types and calls one method here; the
method resolves partition logs in the data directory and calls their ``append`` or ``read``.
Nothing here knows about gRPC or protobuf. The calls of the coordinators (consumer groups,
transactions, share groups) are in ``coordinator_calls.py`` and the produce path (validate,
check producer sequences, append, wait for ``acks``) in ``produce_path.py``, mixins of ``Broker``.

Threading: every method is called on the server's asyncio event loop thread. Appends run inline
(validation is one crc32c call and a few numpy reductions per batch, the write one ``pwritev``);
waiting for an fsync (``flush=always`` with ``acks=all``) runs on a small thread pool so the loop
keeps serving, and concurrent waits share one fdatasync (group commit). The data directory and
each partition log have their own locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from logstore.broker.backpressure import Backpressure
from logstore.broker.config import BrokerConfig
from logstore.broker.coordinator_calls import CoordinatorCalls
from logstore.broker.groups.coordinator import GroupCoordinator
from logstore.broker.groups.offsets import OffsetStore
from logstore.broker.internal import trusted_header
from logstore.broker.produce_path import ProducePath
from logstore.broker.producer_state import ABORT_MARKER, COMMIT_MARKER, PartitionProducerState
from logstore.broker.replication import Replication
from logstore.broker.share import (
    ShareCoordinator,
)
from logstore.broker.share.leadership import data_topic
from logstore.broker.state_checkpoints import StateCheckpoints
from logstore.broker.transactions import TransactionCoordinator
from logstore.broker.types import (
    AbortedTransaction,
    FetchItem,
    FetchOutcome,
    Isolation,
    ListedOffset,
    ListOffsetsItem,
    OffsetSpec,
    StartPosition,
)
from logstore.broker.wakeups import Wakeups, wait
from logstore.errors import (
    InvalidRequestError,
    LogstoreError,
    OffsetOutOfRangeError,
    ShuttingDownError,
)
from logstore.records import encode_batch
from logstore.storage import DataDir, LogConfig, PartitionLog, TopicDescription, validate_topic_name
from logstore.storage.config import FLUSH_ALWAYS

log = logging.getLogger(__name__)

#: A subscription with nothing to send re-checks this often even without a wake-up (closing).
SUBSCRIBE_IDLE_S = 1.0
#: A subscription's first message holds at most this much (still one whole batch at least); each
#: next one may hold twice as much, up to its ``max_bytes``: the first records reach the client
#: sooner (it decodes the first message while the broker reads the next), and a long read still
#: moves in large messages (100 B from the beginning, 300,000 records: first records after
#: 2.6 ms instead of 8.9 ms on the shared box; docs/per-record.md).
SUBSCRIBE_FIRST_BYTES = 256 << 10


class Broker(ProducePath, CoordinatorCalls):
    def __init__(self, data_dir: DataDir, config: BrokerConfig, loop: asyncio.AbstractEventLoop,
                 *, clustered: bool = False) -> None:
        """``clustered``: the broker is about to join a cluster (its internal partitions are
        replicas there, written only as their leader: nothing is written to them at start-up)."""
        self.data_dir = data_dir
        self.config = config
        self._loop = loop
        self._wakeups = Wakeups(loop)
        data_dir.add_append_listener(self._wakeups.on_append)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="logstore-sync")
        self.closing = False
        self.subscriptions = 0
        #: Set by the cluster layer on a clustered broker; None on a single node.
        self.replication: Replication | None = None
        clock = data_dir.clock
        self.offsets = OffsetStore(data_dir, clock, config.offsets_topic_partitions, clamp=not clustered)
        self.groups = GroupCoordinator(data_dir, clock, config.group_heartbeat_interval_ms)
        self._producer_states: dict[tuple[str, int], PartitionProducerState] = {}
        self.clustered = clustered
        self.transactions = TransactionCoordinator(
            data_dir, clock, self.offsets, self._write_markers, clustered=clustered
        )
        for state in list(self._producer_states.values()):  # built while the coordinator loaded
            self._abort_orphans(state)
        self.shares = ShareCoordinator(
            data_dir, clock, config.offsets_topic_partitions, self._wakeups, self._executor, loop,
            clustered=clustered,
        )
        self.checkpoints = StateCheckpoints(
            [self.offsets.take_snapshots, self.transactions.take_snapshots], clock,
            config.state_snapshot_interval_ms,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self.backpressure = Backpressure(
            per_connection=config.max_inflight_bytes_per_connection,
            per_partition=config.max_unflushed_bytes_per_partition,
            total=config.max_unflushed_bytes,
            timeout_s=config.backpressure_timeout_ms / 1000,
            queued=config.max_queued_request_bytes,
            max_request_bytes=config.max_request_bytes,
        )

    def start(self) -> None:
        """Start the housekeeping task (member expiry, transaction timeouts)."""
        if self._housekeeping is None:
            self._housekeeping = self._loop.create_task(self._housekeep())

    async def _housekeep(self) -> None:
        while not self.closing:
            try:
                self.release_unled_groups()
                self.transactions.release_unled()
                self.groups.expire()
                self.transactions.expire()
                self.shares.expire()
                self.checkpoints.tick(self._loop, self._executor)
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(self.config.housekeeping_interval_ms / 1000)

    @classmethod
    def open(cls, path: str | Path, config: BrokerConfig | None = None, *, background: bool = True,
             clustered: bool = False) -> Broker:
        """Open the data directory at ``path`` (recovering it if needed); call on the loop."""
        config = config or BrokerConfig()
        data_dir = DataDir.open(
            path, defaults=config.topic_defaults, limits=config.limits,
            intervals=config.maintenance, background=background,
        )
        return cls(data_dir, config, asyncio.get_running_loop(), clustered=clustered)

    def begin_shutdown(self) -> None:
        """Refuse new work (ShuttingDownError) and wake every long poll and subscription."""
        self.closing = True
        self._wakeups.wake_all()

    async def close(self) -> None:
        """Refuse new work, wake every waiter, flush and cleanly close the data directory."""
        if self.data_dir.closed:
            return
        self.closing = True
        self._wakeups.wake_all()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.checkpoints.close(self._loop, self._executor)
        for state in self._producer_states.values():
            try:
                state.snapshot()
            except OSError:
                log.exception("writing the producer state snapshot of %s", state.log)
        await self._loop.run_in_executor(self._executor, self.data_dir.close)
        self._executor.shutdown(wait=True)

    def _check_open(self) -> None:
        if self.closing:
            raise ShuttingDownError()

    # -- topics -------------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, Any] | None = None) -> TopicDescription:
        self._check_open()
        return self.data_dir.create_topic(name, partitions, config)

    def delete_topic(self, name: str) -> None:
        self._check_open()
        if name.startswith("__") and data_topic(name) is None:  # (a cluster drops share state topics)
            self.data_dir.topic(name)  # unknown -> UnknownTopicError
            raise InvalidRequestError(f"internal topic {name!r} cannot be deleted", field="name")
        self.data_dir.delete_topic(name)
        for key in [k for k in self._producer_states if k[0] == name]:
            del self._producer_states[key]
        self.transactions.topic_deleted(name)
        self._take_over_all()  # (a cluster: the offsets partitions led here, loaded)
        self.offsets.delete_topic(name)
        self.shares.topic_deleted(name)
        self._wakeups.wake_all()

    def list_topics(self, include_internal: bool = False) -> list[tuple[str, int, bool]]:
        self._check_open()
        result = []
        for name in self.data_dir.list_topics(include_internal=include_internal):
            topic = self.data_dir.topic(name)
            result.append((name, topic.partitions, topic.internal))
        return result

    def describe_topic(self, name: str) -> TopicDescription:
        self._check_open()
        return self.data_dir.describe_topic(name)

    def alter_topic_config(self, name: str, set_keys: dict[str, str], reset_keys: Sequence[str]) -> TopicDescription:
        self._check_open()
        changes: dict[str, Any] = dict(set_keys)
        defaults = self.data_dir.defaults
        for key in reset_keys:
            normalized = key.replace(".", "_").replace("-", "_")
            if normalized not in LogConfig.keys():
                LogConfig.from_dict({key: ""})  # raises InvalidConfigError naming the key
            changes[normalized] = getattr(defaults, normalized)
        self.data_dir.alter_config(name, changes)
        return self.data_dir.describe_topic(name)

    def add_partitions(self, name: str, total: int) -> TopicDescription:
        self._check_open()
        return self.data_dir.add_partitions(name, total)

    def producer_state(self, partition_log: PartitionLog) -> PartitionProducerState:
        """The partition's producer state, rebuilt from its batch headers on first use."""
        key = (partition_log.topic, partition_log.partition)
        state = self._producer_states.get(key)
        if state is None or state.log is not partition_log:
            state = PartitionProducerState(partition_log)
            state.load()
            self._producer_states[key] = state
            self._abort_orphans(state)
        return state

    def cached_producer_state(self, topic: str, partition: int) -> PartitionProducerState | None:
        return self._producer_states.get((topic, partition))

    def forget_producer_state(self, topic: str, partition: int) -> None:
        """The partition's log changed under the state (a follower's truncation): rebuild it."""
        self._producer_states.pop((topic, partition), None)

    def high_watermark(self, partition_log: PartitionLog) -> int:
        """The end of what consumers may read: the log end on a single node, the replicated
        high watermark in a cluster."""
        if self.replication is None:
            return partition_log.log_end_offset
        return self.replication.high_watermark(partition_log.topic, partition_log.partition)

    def notify_readers(self, partition_log: PartitionLog) -> None:
        """Wake long polls and subscriptions of a partition (its high watermark moved)."""
        self._wakeups.on_append(partition_log)

    async def wait_for_append(
        self, keys: list[tuple[str, int]], timeout_s: float, moved: Callable[[], bool]
    ) -> bool:
        """Wait up to ``timeout_s`` for an append to (or a high watermark move of) any of the
        partitions; ``moved`` is checked after registering, so no append is missed."""
        future = self._wakeups.register(keys)
        try:
            if moved():
                return True
            return await wait(future, timeout_s)
        finally:
            self._wakeups.unregister(keys, future)

    def _abort_orphans(self, state: PartitionProducerState) -> None:
        """Abort open transactions in this partition that no coordinator state covers (the
        coordinator's record of the partition was lost in a crash): nothing else would."""
        if not hasattr(self, "transactions"):
            return  # the coordinator is still loading; __init__ checks these states afterwards
        if self.clustered:
            return  # a cluster takes no transactional batches yet: no transaction to be orphaned
        log_ = state.log
        for producer_id in list(state.open_transactions):
            if not self.transactions.is_open_in(producer_id, log_.topic, log_.partition):
                log.warning(
                    "%s/%s: aborting an open transaction of producer %d that no transaction covers",
                    log_.topic, log_.partition, producer_id,
                )
                epoch = max(self.transactions.epoch_of(producer_id), state.producers[producer_id].epoch)
                self._write_markers(producer_id, epoch, [(log_.topic, log_.partition)], False)

    def last_stable_offset(self, partition_log: PartitionLog) -> int:
        return self.producer_state(partition_log).last_stable_offset()

    def _write_markers(self, producer_id: int, epoch: int, partitions: list[tuple[str, int]], commit: bool) -> None:
        """Append a COMMIT or ABORT control batch to each partition of a transaction; wait for
        the fsync of those in ``flush=always`` partitions only (the others follow their policy,
        like their records)."""
        marker = COMMIT_MARKER if commit else ABORT_MARKER
        written: list[tuple[PartitionLog, int]] = []
        for topic, partition in partitions:
            partition_log = self.data_dir.log(topic, partition)
            state = self.producer_state(partition_log)
            batch = encode_batch(
                [b""], keys=[marker], timestamps=self.data_dir.clock.now_ms(),
                producer_id=producer_id, producer_epoch=epoch, transactional=True, control=True,
            )
            header = trusted_header(batch)
            result = partition_log.append(batch, headers=[header], sync=False)
            state.update(header, result.base_offset, result.last_offset)
            state.complete(producer_id, result.base_offset, commit)
            state.prune()
            if partition_log.config.flush == FLUSH_ALWAYS:
                written.append((partition_log, result.log_end_offset))
        for partition_log, end_offset in written:  # a flush=always marker is on disk before COMPLETE
            partition_log.wait_durable(end_offset)

    # -- fetch --------------------------------------------------------------------------------------

    def _read(self, item: FetchItem, max_bytes: int, isolation: Isolation, *, data: bool = True) -> FetchOutcome:
        try:
            partition_log = self.data_dir.log(item.topic, item.partition)
            lso = self.last_stable_offset(partition_log)
            high_watermark = partition_log.log_end_offset
            if self.replication is not None:
                self.replication.leader_epoch(item.topic, item.partition)  # NotLeaderError
                high_watermark = self.replication.high_watermark(item.topic, item.partition)
                lso = min(lso, high_watermark)
                if high_watermark <= item.offset <= partition_log.log_end_offset:
                    data = False  # not replicated yet: nothing to read (not out of range)
            if not data:
                return FetchOutcome(
                    item.topic, item.partition, b"", high_watermark,
                    partition_log.log_start_offset, lso, item.offset,
                )
            committed_only = isolation is Isolation.READ_COMMITTED
            limit = lso if committed_only else (high_watermark if self.replication is not None else None)
            result = partition_log.read(item.offset, max_bytes, max_offset=limit)
            aborted = []
            if committed_only and result.data:
                aborted = [
                    AbortedTransaction(a.producer_id, a.first_offset, a.last_offset)
                    for a in self.producer_state(partition_log).aborted_between(item.offset, result.next_offset)
                ]
        except LogstoreError as exc:
            return FetchOutcome(item.topic, item.partition, error=exc)
        return FetchOutcome(
            item.topic,
            item.partition,
            result.data,
            high_watermark if self.replication is not None else result.log_end_offset,
            result.log_start_offset,
            lso,
            result.next_offset,
            aborted,
        )

    def _read_all(self, items: Sequence[FetchItem], max_bytes: int, isolation: Isolation) -> list[FetchOutcome]:
        """Read partitions in order while the byte budget lasts (each gets at least one batch)."""
        budget = max_bytes
        outcomes = []
        for item in items:
            if budget <= 0:
                outcomes.append(self._read(item, 0, isolation, data=False))
                continue
            limit = min(item.max_bytes, budget) if item.max_bytes else budget
            outcome = self._read(item, limit, isolation)
            budget -= len(outcome.records)
            outcomes.append(outcome)
        return outcomes

    async def fetch(
        self,
        items: Sequence[FetchItem],
        *,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        max_bytes: int = 1 << 20,
        isolation: Isolation = Isolation.READ_UNCOMMITTED,
        group: tuple[str, str, int] | None = None,
    ) -> list[FetchOutcome]:
        """Read every partition; if fewer than ``min_bytes`` came back, wait (up to
        ``max_wait_ms``) for appends and read again. Per-partition problems are the outcome's
        ``error``; the other partitions are still served."""
        self._check_open()
        if not items:
            raise InvalidRequestError("a fetch request needs at least one partition", field="partitions")
        for name, value in (("max_wait_ms", max_wait_ms), ("min_bytes", min_bytes), ("max_bytes", max_bytes)):
            if value < 0:
                raise InvalidRequestError(f"{name} must not be negative, not {value}", field=name)
        for item in items:
            if item.offset < 0 or item.max_bytes < 0:
                raise InvalidRequestError(
                    f"offset and max_bytes of {item.topic}/{item.partition} must not be negative",
                    field="offset",
                )
        if group is not None:
            validate_topic_name(group[0], kind="group")
        if group is not None and group[1] and self._coordinates(group[0]):
            # (in a cluster only the group's coordinator knows its members; a partition's
            # leader elsewhere serves the fetch, as Kafka's do)
            group_id, member_id, member_epoch = group
            self.groups.check_member(
                group_id, member_id, member_epoch, [(item.topic, item.partition) for item in items]
            )
        max_bytes = min(max_bytes or (1 << 20), self.config.max_fetch_bytes)
        max_wait_ms = min(max_wait_ms, self.config.max_wait_ms)
        min_bytes = max(min_bytes, 1)
        deadline = self._loop.time() + max_wait_ms / 1000
        keys = [(item.topic, item.partition) for item in items]
        while True:
            outcomes = self._read_all(items, max_bytes, isolation)
            available = sum(len(o.records) for o in outcomes)
            remaining = deadline - self._loop.time()
            if (
                available >= min_bytes
                or remaining <= 0
                or self.closing
                or any(o.error is not None for o in outcomes)
            ):
                return outcomes
            future = self._wakeups.register(keys)
            try:
                if not self._moved(items, outcomes):
                    await wait(future, remaining)
            finally:
                self._wakeups.unregister(keys, future)

    def _moved(self, items: Sequence[FetchItem], outcomes: list[FetchOutcome]) -> bool:
        """Whether any partition grew since it was read (an append raced the registration)."""
        for item, outcome in zip(items, outcomes, strict=True):
            try:
                if self.high_watermark(self.data_dir.log(item.topic, item.partition)) != outcome.high_watermark:
                    return True
            except LogstoreError:
                return True
        return False

    # -- subscribe ----------------------------------------------------------------------------------

    def resolve_start(
        self, topic: str, partition: int, start: StartPosition, offset: int = 0, timestamp_ms: int = 0
    ) -> int:
        partition_log = self.data_dir.log(topic, partition)
        if start is StartPosition.EARLIEST:
            return partition_log.log_start_offset
        if start is StartPosition.LATEST:
            return self.high_watermark(partition_log)
        if start is StartPosition.TIMESTAMP:
            found = partition_log.offset_for_timestamp(timestamp_ms)
            return self.high_watermark(partition_log) if found is None else found
        if not partition_log.log_start_offset <= offset <= partition_log.log_end_offset:
            raise OffsetOutOfRangeError(
                topic=topic, partition=partition, offset=offset,
                log_start_offset=partition_log.log_start_offset,
                log_end_offset=partition_log.log_end_offset,
            )
        return offset

    async def subscribe(
        self,
        topic: str,
        partition: int,
        start_offset: int,
        *,
        max_bytes: int = 1 << 20,
        isolation: Isolation = Isolation.READ_UNCOMMITTED,
    ) -> AsyncIterator[FetchOutcome]:
        """Yield whole batches from ``start_offset`` on, then new ones as they are appended.

        The caller pulls: nothing is read ahead of what it has taken, so the bytes in flight are
        one message plus what the transport buffers. Messages start small and grow: the first
        holds up to ``SUBSCRIBE_FIRST_BYTES``, each next one up to twice the one before, until
        ``max_bytes``. Raises OffsetOutOfRangeError if retention deletes records the subscriber
        has not read yet.
        """
        self._check_open()
        max_bytes = min(max_bytes or (1 << 20), self.config.max_subscribe_bytes)
        message_bytes = min(max_bytes, SUBSCRIBE_FIRST_BYTES)
        key = [(topic, partition)]
        item = FetchItem(topic, partition, start_offset)
        self.subscriptions += 1
        try:
            while not self.closing:
                outcome = self._read(item, message_bytes, isolation)
                if outcome.error is not None:
                    raise outcome.error
                if outcome.records:
                    item.offset = outcome.next_offset
                    message_bytes = min(2 * message_bytes, max_bytes)
                    yield outcome
                    continue
                future = self._wakeups.register(key)
                try:
                    partition_log = self.data_dir.log(topic, partition)
                    if self.high_watermark(partition_log) == outcome.high_watermark:
                        await wait(future, SUBSCRIBE_IDLE_S)
                finally:
                    self._wakeups.unregister(key, future)
        finally:
            self.subscriptions -= 1

    # -- offsets ------------------------------------------------------------------------------------

    def list_offsets(self, items: Sequence[ListOffsetsItem], isolation: Isolation = Isolation.READ_UNCOMMITTED) -> list[ListedOffset]:
        self._check_open()
        results = []
        for item in items:
            try:
                partition_log = self.data_dir.log(item.topic, item.partition)
                high_watermark = self.high_watermark(partition_log)
                latest = (
                    min(self.last_stable_offset(partition_log), high_watermark)
                    if isolation is Isolation.READ_COMMITTED
                    else high_watermark
                )
                if item.spec is OffsetSpec.EARLIEST:
                    offset = partition_log.log_start_offset
                elif item.spec is OffsetSpec.LATEST:
                    offset = latest
                else:
                    found = partition_log.offset_for_timestamp(item.timestamp_ms)
                    offset = latest if found is None else min(found, latest)
                results.append(ListedOffset(item.topic, item.partition, offset))
            except LogstoreError as exc:
                results.append(ListedOffset(item.topic, item.partition, error=exc))
        return results

    # -- introspection (metrics) --------------------------------------------------------------------

    def partition_stats(self) -> list[tuple[str, int, int, int, int]]:
        """(topic, partition, log start, log end, bytes) of every partition."""
        return [
            (lg.topic, lg.partition, lg.log_start_offset, lg.log_end_offset, lg.size_bytes)
            for lg in self.data_dir.logs()
        ]
