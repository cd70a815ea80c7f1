"""``Consumer``: reads assigned partitions with long-polling fetches, one fetch always in flight.

A fetch asks for every assigned partition from its *fetch offset*. As soon as a response arrives
the next fetch goes out from each partition's ``next_offset``, before the response is decoded, so
the broker works on the next fetch while the client decodes this one. A response is decoded only
once everything before it has been handed out; until then its partitions wait in ``_buffer``.

Positions. ``position`` is the next offset ``poll`` returns; ``fetch_offset`` is where the next
fetch starts (ahead of it while a response is buffered). ``seek`` sets both and drops what was
buffered; a response to a fetch sent before the seek no longer matches ``fetch_offset`` and is
ignored. A partition with no position gets one from ``auto_offset_reset`` (earliest or latest via
``ListOffsets``, or an error); so does one whose position fell out of the log (OFFSET_OUT_OF_RANGE).

Groups. With ``group_id`` and ``subscribe(topics)`` the broker assigns the partitions; the
heartbeat thread (``group.Membership``) learns each new assignment and ``poll`` applies it in the
caller's thread (``_reconcile``): revoked partitions get ``on_revoke``, then an auto-commit, then
are dropped; added ones start at the group's committed offset (else ``auto_offset_reset``) and get
``on_assign``; after an eviction ``on_lost`` runs and nothing is committed. ``commit`` writes
offsets for the group; with ``assign`` instead of ``subscribe`` a consumer still reads and
commits the group's offsets (a standalone consumer; the broker accepts that while the group has
no members).

Thread-safety: none; use a consumer from one thread (as with Kafka's). Its heartbeat thread only
talks to the broker and to ``Membership``.
"""

from __future__ import annotations

import datetime
import logging
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

import grpc

from logstore.api.v1 import records_pb2
from logstore.client import wire
from logstore.client.admin import OffsetQuery, list_offsets_routed
from logstore.client.channel import (
    Channels,
    call_with_retries,
    error_from_detail,
    error_from_rpc,
    is_transient,
    refused_as,
)
from logstore.client.config import (
    ISOLATION_LEVELS,
    ConsumerConfig,
    Credentials,
    backoff_seconds,
    build,
    resolve_server,
)
from logstore.client.group import (
    REJOIN_REASONS,
    Membership,
    commit_future,
    commit_request,
    commit_result,
    fetch_committed,
)
from logstore.client.metadata import Metadata
from logstore.client.models import ConsumerRecord, GroupMetadata, TopicPartition
from logstore.client.routing import Fetches, any_broker, group_coordinator
from logstore.client.subscription import Subscriptions
from logstore.errors import InvalidRequestError, LogstoreError, UnknownMemberError
from logstore.records import BatchHeader, RecordColumns, decode_columns
from logstore.records.decode import skip_aborted

Partition = TopicPartition | tuple[str, int] | int
#: ``on_assign``, ``on_revoke`` and ``on_lost`` get the partitions, sorted.
RebalanceCallback = Callable[[list[TopicPartition]], object]
#: Per-partition fetch errors that mean the partition's leader moved: fetched again from the
#: same offset, from the new leader, after a backoff.
MOVED_REASONS = ("NOT_LEADER", "FENCED_LEADER_EPOCH")
#: Fetch errors that mean the group moved on: the heartbeat thread sorts it out.
GROUP_FETCH_REASONS = (*REJOIN_REASONS, "PARTITION_NOT_ASSIGNED")

log = logging.getLogger("logstore.client")


class _State:
    """One assigned partition."""

    __slots__ = ("position", "fetch_offset", "high_watermark", "log_start_offset", "error")

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.high_watermark = -1
        self.log_start_offset = -1
        #: A per-partition error to raise from poll until the next seek.
        self.error: LogstoreError | None = None


class _Buffered:
    """Fetched bytes of one partition, decoded when taken. The first batch may start before
    ``start`` (the position when it was fetched); ``end`` is the response's next_offset;
    ``aborted`` lists (producer_id, first_offset, last_offset) to drop (read_committed)."""

    __slots__ = ("records", "start", "end", "aborted", "columns")

    def __init__(self, fetched: wire.FetchedPartition, start: int | None) -> None:
        self.records = fetched.records
        self.start = start
        self.end = fetched.next_offset
        self.aborted = fetched.aborted_transactions
        self.columns: RecordColumns | None = None

    def include(self) -> Callable[[BatchHeader], bool] | None:
        """Drop the batches of aborted transactions (Kafka's read_committed filtering)."""
        return skip_aborted(self.aborted)


class _Fetch:
    __slots__ = ("future", "offsets")

    def __init__(self, future: Any, offsets: dict[TopicPartition, int]) -> None:
        self.future = future
        self.offsets = offsets


class Consumer:
    """Reads records from assigned partitions, alone or as a member of a consumer group.

    ``Consumer(server, auto_offset_reset="latest", fetch_max_wait_ms=500, ...)``; the options are
    ``ConsumerConfig``'s. ``server`` may list several bootstrap addresses
    (``"h1:7070,h2:7070"``); in a cluster each partition is read from its leader (after
    NOT_LEADER or a broken connection: from the new leader, at the same position) and group
    calls go to the group's coordinator. Assign partitions with ``assign`` (or join a group with ``group_id=``
    and ``subscribe``), move with ``seek*``, read with ``poll`` (records), ``poll_columns``
    (numpy columns) or by iterating.

    **Auto-commit** (``enable_auto_commit=True``, the default, with a ``group_id``): at the start
    of a ``poll()`` at least ``auto_commit_interval_ms`` after the last one, before partitions
    are revoked, and in ``close()``, the consumer commits its *positions*: for every partition,
    the offset after the last record that an *earlier* ``poll()`` returned. Records are
    committed only by the poll (or close) after the one that returned them, so processing every
    record of a poll before polling again gives at-least-once delivery; a crash re-delivers at
    most the records of the last ``auto_commit_interval_ms``. For at-most-once, commit right
    after ``poll`` and before processing; for exactly-once, commit inside a transaction
    (``Producer.send_offsets_to_transaction(consumer.position_offsets(),
    consumer.group_metadata())``) with ``enable_auto_commit=False``.
    """

    def __init__(self, server: str | None = None, **options: Any) -> None:
        credentials = Credentials.take(options)
        self.config: ConsumerConfig = build(ConsumerConfig, options)
        self.server = resolve_server(server)
        config = self.config
        self._channels = Channels(credentials)
        self._cluster = Metadata(
            self.server, self._channels, retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
            timeout_s=config.request_timeout_ms / 1000.0, max_age_ms=config.metadata_max_age_ms,
        )
        #: Calls any broker answers; group calls go to the group's coordinator.
        self._stub: Any = any_broker(self._cluster)
        self._group_stub: Any = (group_coordinator(self._cluster, config.group_id)
                                 if config.group_id else self._stub)
        self._fetches = Fetches(self._cluster)
        self._isolation = ISOLATION_LEVELS[self.config.isolation_level]
        self._timeout = self.config.request_timeout_ms / 1000.0
        self._states: dict[TopicPartition, _State] = {}
        self._buffer: dict[TopicPartition, _Buffered] = {}
        self._inflight: _Fetch | None = None
        self._subscriptions = Subscriptions(
            self._channels, lambda tp: self._cluster.leader(*tp), self._isolation,
            self.config.max_partition_fetch_bytes or min(self.config.fetch_max_bytes, 4 << 20),
        )
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        # groups
        self._group_id = self.config.group_id
        self._membership: Membership | None = None
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        self._auto_commit = bool(self._group_id) and self.config.enable_auto_commit
        self._last_auto_commit = time.monotonic()
        #: What the consumer last committed per partition (an auto-commit skips unchanged ones).
        self._committed: dict[TopicPartition, int] = {}
        #: The membership generation the partitions held belong to, and the member identity
        #: the last poll saw in it (see ``_identity``).
        self._generation = 0
        self._metadata: GroupMetadata | None = None

    # -- assignment ------------------------------------------------------------------------------

    def assign(self, partitions: str | Iterable[TopicPartition | tuple[str, int] | str]) -> None:
        """Read exactly these partitions: ``TopicPartition`` tuples, or topic names (all their
        partitions). Replaces the previous assignment; partitions kept keep their position.
        With a ``group_id``, new partitions start at the group's committed offsets."""
        if self._membership is not None:
            raise InvalidRequestError("the consumer subscribed to a group: assign() and "
                                      "subscribe() do not mix")
        items = [partitions] if isinstance(partitions, str) else list(partitions)
        wanted: list[TopicPartition] = []
        for item in items:
            if isinstance(item, str):
                count = self._partition_count(item)
                wanted += [TopicPartition(item, p) for p in range(count)]
            else:
                wanted.append(TopicPartition(*item))
        self._states = {tp: self._states.get(tp) or _State() for tp in wanted}
        self._buffer = {tp: b for tp, b in self._buffer.items() if tp in self._states}

    def assignment(self) -> list[TopicPartition]:
        return list(self._states)

    def subscribe(
        self,
        topics: str | Iterable[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group ``group_id`` for ``topics``; the broker assigns partitions.

        Assignment changes are applied inside ``poll()``, in this thread: ``on_revoke(parts)``
        runs before partitions go (then, with auto-commit, their positions are committed);
        ``on_assign(parts)`` after new ones arrive, with their positions set from the group's
        committed offsets (else ``auto_offset_reset``); ``on_lost(parts)`` when the member was
        evicted or fenced: the partitions may already be someone else's, so nothing is
        committed. Each gets only the partitions that changed. Calling ``subscribe`` again
        changes the topics.
        """
        if not self._group_id:
            raise InvalidRequestError("subscribe() needs a consumer with a group_id",
                                      field="group_id")
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            raise InvalidRequestError("subscribe() needs at least one topic", field="topics")
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        if self._membership is not None:
            self._membership.subscribe(names)
            return
        if self._states:
            raise InvalidRequestError("the consumer has assigned partitions: assign() and "
                                      "subscribe() do not mix")
        self._membership = Membership(self._group_stub, self.server, self._group_id, self.config,
                                      names)
        self._membership.start()

    def group_metadata(self) -> GroupMetadata:
        """(group_id, member_id, member_epoch) for ``Producer.send_offsets_to_transaction``."""
        if not self._group_id:
            raise InvalidRequestError("the consumer has no group_id", field="group_id")
        if self._membership is None:
            return GroupMetadata(self._group_id, "", 0)
        generation, metadata = self._membership.snapshot()
        if generation != self._generation and self._metadata is not None:
            return self._metadata  # lost since the last poll: the broker will refuse it
        return metadata

    def _identity(self) -> GroupMetadata:
        """Who commits: the member the partitions held were assigned to. If the membership was
        lost since (the heartbeat thread may already have rejoined under a new id), committing
        them is refused here: they may have been someone else's meanwhile."""
        group_id = self._require_group()
        if self._membership is None:
            return GroupMetadata(group_id, "", 0)
        generation, metadata = self._membership.snapshot()
        if generation != self._generation:
            stale = self._metadata or metadata
            raise UnknownMemberError(group_id, stale.member_id)
        return metadata

    # -- committing ------------------------------------------------------------------------------

    def commit(
        self, offsets: Mapping[TopicPartition, int] | None = None, asynchronous: bool = False
    ) -> dict[TopicPartition, int] | Future[dict[TopicPartition, int]]:
        """Commit ``offsets`` (``{TopicPartition: next offset to read}``), by default the
        current positions (after the records ``poll`` returned) of every partition held.

        Returns the committed offsets, or with ``asynchronous=True`` a future of them. A
        partition the broker refuses raises its typed error (``PartitionNotAssignedError``
        for one this member does not own, ``OffsetOutOfRangeError``); a member the group no
        longer knows raises ``UnknownMemberError`` or ``FencedMemberEpochError``.
        """
        self._require_group()
        chosen = dict(offsets) if offsets is not None else self.position_offsets()
        chosen = {TopicPartition(*tp): int(offset) for tp, offset in chosen.items()}
        if not chosen:
            if asynchronous:
                done: Future[dict[TopicPartition, int]] = Future()
                done.set_result({})
                return done
            return {}
        request = commit_request(self._identity(), chosen)
        if asynchronous:
            future = commit_future(
                self._group_stub.CommitOffsets.future(request, timeout=self._timeout),
                chosen, self.server)
            future.add_done_callback(lambda f: self._note_committed(f, chosen))
            return future
        config = self.config
        response = call_with_retries(
            lambda: self._group_stub.CommitOffsets(request, timeout=self._timeout),
            server=self.server, retries=config.retries, retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )
        committed = commit_result(response, chosen)
        self._committed.update(committed)
        return committed

    def _note_committed(self, future: Future[dict[TopicPartition, int]],
                        offsets: dict[TopicPartition, int]) -> None:
        if future.exception() is None:
            self._committed.update(offsets)

    def committed(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed) of ``partitions``
        (default: the partitions held)."""
        group_id = self._require_group()
        chosen = self._tps(partitions) if partitions else list(self._states)
        return fetch_committed(self._group_stub, self.server, group_id, chosen, self.config)

    def position_offsets(self) -> dict[TopicPartition, int]:
        """``{TopicPartition: position}`` of every partition held that has a position: what
        ``commit()`` commits by default, and what a transaction should commit
        (``Producer.send_offsets_to_transaction``)."""
        return {tp: state.position for tp, state in self._states.items()
                if state.position is not None}

    def _require_group(self) -> str:
        if not self._group_id:
            raise InvalidRequestError("committing needs a consumer with a group_id",
                                      field="group_id")
        return self._group_id

    def _auto_commit_now(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the positions that changed (of ``partitions``, default all held); errors are
        logged, not raised (the records will be delivered again)."""
        positions = self.position_offsets()
        if partitions is not None:
            wanted = set(partitions)
            positions = {tp: o for tp, o in positions.items() if tp in wanted}
        changed = {tp: o for tp, o in positions.items() if self._committed.get(tp) != o}
        self._last_auto_commit = time.monotonic()
        if not changed:
            return
        try:
            self.commit(changed)
        except LogstoreError as exc:
            log.warning("group %s: auto-commit of %d partitions failed: %s", self._group_id,
                        len(changed), exc.message)

    # -- rebalancing -----------------------------------------------------------------------------

    def _group_poll(self) -> None:
        """The group's part of every poll: auto-commit when due, then apply assignment changes."""
        membership = self._membership
        if self._auto_commit and self._states and (
            time.monotonic() - self._last_auto_commit >= self.config.auto_commit_interval_ms / 1000
        ):
            self._auto_commit_now()
        if membership is not None:
            membership.polled()
            if membership.changed.is_set():
                self._reconcile(membership)
            generation, metadata = membership.snapshot()
            if generation == self._generation:
                self._metadata = metadata

    def _reconcile(self, membership: Membership) -> None:
        generation, lost, target, error = membership.take()
        if error is not None:
            raise error
        if lost:
            partitions = sorted(self._states)
            self._generation = generation
            if partitions:
                log.warning("group %s: lost %d partitions", self._group_id, len(partitions))
                self._drop(partitions)
                membership.set_owned(())
                if self._on_lost is not None:
                    self._on_lost(partitions)
        if target is None:
            return
        current, metadata = membership.snapshot()
        if current == self._generation:
            self._metadata = metadata
        revoked = sorted(set(self._states) - target)
        added = sorted(target - set(self._states))
        if revoked:
            if self._on_revoke is not None:
                self._on_revoke(revoked)
            if self._auto_commit:
                self._auto_commit_now(revoked)
            self._drop(revoked)
            membership.set_owned(self._states)
            membership.wake()  # tell the broker now: the new owner is waiting
        if added:
            for tp in added:
                self._states[tp] = _State()
            membership.set_owned(self._states)
            self._cancel_fetch()
            if self._on_assign is not None:
                self._on_assign(added)

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._states.pop(tp, None)
            self._buffer.pop(tp, None)
            self._committed.pop(tp, None)
        self._cancel_fetch()

    def _cancel_fetch(self) -> None:
        self._subscriptions.close()
        if self._inflight is not None:
            self._inflight.future.cancel()
            self._inflight = None

    # -- positions -------------------------------------------------------------------------------

    def seek(self, partition: Partition, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        tp = self._tp(partition)
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        self._set_position(tp, offset)

    def seek_to_beginning(self, *partitions: Partition) -> None:
        """Move to the log start offset (all assigned partitions when none are named)."""
        self._seek_to("earliest", partitions)

    def seek_to_end(self, *partitions: Partition) -> None:
        """Move to the log end offset: only records produced from now on are read."""
        self._seek_to("latest", partitions)

    def seek_to_timestamp(
        self, timestamp: int | datetime.datetime, *partitions: Partition
    ) -> None:
        """Move to the first record with a timestamp at or after ``timestamp`` (ms since the
        epoch, or a datetime; naive is local time), or to the end when there is none."""
        self._seek_to(timestamp, partitions)

    def position(self, partition: Partition) -> int:
        """The offset of the next record ``poll`` returns for ``partition``."""
        tp = self._tp(partition)
        self._resolve_positions()
        position = self._states[tp].position
        assert position is not None
        return position

    def beginning_offsets(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int]:
        return self._list(dict.fromkeys(self._tps(partitions), "earliest"))

    def end_offsets(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int]:
        """Log end offsets (one past the last record) of the partitions (default: assigned)."""
        return self._list(dict.fromkeys(self._tps(partitions), "latest"))

    def offsets_for_time(
        self, timestamp: int | datetime.datetime, partitions: Iterable[Partition] = ()
    ) -> dict[TopicPartition, int]:
        return self._list(dict.fromkeys(self._tps(partitions), timestamp))

    def highwater(self, partition: Partition) -> int:
        """The high watermark the last fetch of ``partition`` reported (-1 before one)."""
        return self._states[self._tp(partition)].high_watermark

    # -- reading ---------------------------------------------------------------------------------

    def poll(
        self, max_records: int | None = None, timeout: float | None = 1.0
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` (default ``max_poll_records``) records, waiting up to
        ``timeout`` seconds (None: until some arrive) when none are buffered."""
        limit = max_records if max_records is not None else self.config.max_poll_records
        if limit <= 0:
            raise ValueError(f"max_records must be positive, not {limit}")
        if self._group_id:
            self._group_poll()
        if not self._buffer:
            self._fill(timeout)
        out: list[ConsumerRecord] = []
        for tp in list(self._buffer):
            buffered = self._buffer[tp]
            columns = self._columns(buffered, as_bytes=True)
            take = min(limit - len(out), len(columns))
            out += columns.slice(0, take).records(ConsumerRecord, tp.topic, tp.partition)
            state = self._states[tp]
            if take == len(columns):
                del self._buffer[tp]
                state.position = buffered.end
            else:
                buffered.columns = columns.slice(take)
                state.position = int(columns.offsets[take])
            if len(out) >= limit:
                break
        return out

    def poll_columns(self, timeout: float | None = 1.0) -> dict[TopicPartition, RecordColumns]:
        """Every buffered record as one ``RecordColumns`` per partition: numpy ``offsets`` and
        ``timestamps``, and ``values()`` as memoryviews of the fetched bytes (no copy).
        Waits up to ``timeout`` seconds (None: until some arrive) when none are buffered."""
        if self._group_id:
            self._group_poll()
        if not self._buffer:
            self._fill(timeout)
        out: dict[TopicPartition, RecordColumns] = {}
        for tp, buffered in self._buffer.items():
            out[tp] = self._columns(buffered, as_bytes=False)
            self._states[tp].position = buffered.end
        self._buffer = {}
        return out

    # -- streams as tables: thin doors to logstore.client.frames (docs/frames.md) ----------------

    def read_arrow(self, topic: str, partitions: Iterable[int] | None = None,
                   start: Any = "earliest", end: Any = "latest", **options: Any) -> Any:
        """Records of ``topic`` with offsets in [``start``, ``end``) as one ``pyarrow.Table``
        (columns partition, offset, timestamp, key, value, headers; values not copied).

        ``start``/``end``: an offset, ``{partition: offset}``, a datetime, "earliest" or
        "latest" (end is capped at the log end now). Options: ``isolation_level`` (default the
        consumer's), ``columns``, ``value_format`` ("binary", "utf8", "json", "arrow"),
        ``schema`` and ``errors`` ("raise" or "null"). Leaves ``poll()``'s positions alone.
        Needs ``pip install 'logstore[arrow]'``."""
        from logstore.client.frames import read

        return read.read_arrow(self._link(), topic, partitions, start, end, **options)

    def iter_arrow(self, topic: str, partitions: Iterable[int] | None = None,
                   start: Any = "earliest", end: Any = "latest", **options: Any) -> Iterator[Any]:
        """As ``read_arrow``, as ``pyarrow.RecordBatch``es while they arrive (flat memory)."""
        from logstore.client.frames import read

        return read.iter_arrow(self._link(), topic, partitions, start, end, **options)

    def read_pandas(self, topic: str, *args: Any, **options: Any) -> Any:
        """``read_arrow(...).to_pandas()``; needs ``pip install 'logstore[pandas]'``."""
        from logstore.client.frames import read

        return read.read_pandas(self._link(), topic, *args, **options)

    def read_polars(self, topic: str, *args: Any, **options: Any) -> Any:
        """``polars.from_arrow(read_arrow(...))``; needs ``pip install 'logstore[polars]'``."""
        from logstore.client.frames import read

        return read.read_polars(self._link(), topic, *args, **options)

    def _link(self) -> Any:
        from logstore.client.frames.span import Link

        if self._closed:
            raise InvalidRequestError("the consumer is closed")
        return Link(self._channels, lambda tp: self._cluster.leader(*tp), self.config, self._list,
                    self._partition_count)

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records as they arrive; stops after ``consumer_timeout_ms`` without one (if set)."""
        idle_limit = self.config.consumer_timeout_ms
        last = time.monotonic()
        while not self._closed:
            wait = 1.0 if idle_limit is None else max(0.0, idle_limit / 1000.0 - (time.monotonic() - last))
            records = self.poll(timeout=wait)
            if records:
                yield from records
                last = time.monotonic()
            elif idle_limit is not None and time.monotonic() - last >= idle_limit / 1000.0:
                return

    def close(self) -> None:
        """In a group: ``on_revoke`` for every partition held, commit their positions (with
        auto-commit) and leave the group. Then close the channel."""
        if self._closed:
            return
        try:
            if self._membership is not None and self._states and self._on_revoke is not None:
                self._on_revoke(sorted(self._states))
            if self._auto_commit and self._states:
                self._auto_commit_now()
        finally:
            self._closed = True
            if self._membership is not None:
                self._membership.stop()
        self._subscriptions.close()
        if self._inflight is not None:
            self._inflight.future.cancel()
            self._inflight = None
        self._channels.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- fetching --------------------------------------------------------------------------------

    def _fill(self, timeout: float | None) -> None:
        """Wait for a fetch that carries records, buffering them (until ``timeout``)."""
        if self._closed:
            raise InvalidRequestError("the consumer is closed")
        membership = self._membership
        if not self._states and membership is None:
            raise InvalidRequestError("no partitions are assigned: call assign() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._streaming():
                if not self._fill_from_streams(deadline):
                    return
                continue
            if membership is not None:
                if membership.changed.is_set():
                    self._reconcile(membership)
                if not self._states:  # nothing assigned (yet): wait for the group
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    membership.changed.wait(remaining)
                    continue
            self._raise_partition_errors()
            self._resolve_positions()
            if self._inflight is None:
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    if deadline is not None and deadline - time.monotonic() < wait:
                        time.sleep(max(0.0, deadline - time.monotonic()))
                        return
                    time.sleep(wait)
                self._inflight = self._send_fetch()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            fetch = self._inflight
            if fetch is None:  # every partition is held by an error
                continue
            try:
                partitions = fetch.future.result(timeout=remaining)
            except grpc.FutureTimeoutError:
                return
            except grpc.RpcError as exc:
                self._inflight = None
                self._fetch_failed(exc)
                continue
            self._failures = 0
            self._inflight = None
            accepted = self._advance(fetch, partitions)
            self._inflight = self._send_fetch()  # one fetch ahead, before decoding this one
            self._store(accepted)
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _streaming(self) -> bool:
        """Whether to read over Subscribe streams (see ``ConsumerConfig.fetch_mode``)."""
        mode = self.config.fetch_mode
        if mode == "fetch" or self._membership is not None:
            self._subscriptions.close()
            return False
        if mode == "auto" and len(self._states) > self.config.max_subscribed_partitions:
            self._subscriptions.close()
            return False
        return True

    def _fill_from_streams(self, deadline: float | None) -> bool:
        """Take one message from the partitions' streams into the buffer; False on timeout."""
        self._raise_partition_errors()
        self._resolve_positions()
        subscriptions = self._subscriptions
        subscriptions.retain(set(self._states))
        now = time.monotonic()
        for tp, state in self._states.items():
            if state.fetch_offset is not None and state.error is None and now >= self._retry_at:
                try:
                    subscriptions.ensure(tp, state.fetch_offset)
                except LogstoreError as exc:  # no leader now, or no broker answers metadata
                    self._stream_failed(tp, state, exc)
                    return True
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._retry_at > now:
            remaining = self._retry_at - now if remaining is None else min(remaining, self._retry_at - now)
        try:
            stream, item = subscriptions.queue.get(timeout=remaining)
        except queue.Empty:
            return deadline is None or time.monotonic() < deadline
        if not subscriptions.is_current(stream):
            return True  # a message of a stream replaced by a seek
        tp = stream.tp
        held = self._states.get(tp)
        if held is None:
            return True
        state = held
        if isinstance(item, LogstoreError):
            subscriptions.drop(tp)
            self._cluster.observe(item, stream.server)
            self._stream_failed(tp, state, item)
            return True
        self._failures = 0
        if state.fetch_offset != stream.next_offset:
            subscriptions.drop(tp)  # moved by a seek since
            return True
        state.high_watermark = item.high_watermark
        state.log_start_offset = item.log_start_offset
        if item.next_offset > stream.next_offset:
            stream.next_offset = state.fetch_offset = item.next_offset
        self._store([(tp, item)])
        return True

    def _stream_failed(self, tp: TopicPartition, state: _State, error: LogstoreError) -> None:
        """A partition's stream ended with ``error``: retriable ones (the broker is down, or no
        longer leads it) reopen it after a backoff, from where the consumer is."""
        if error.reason == "OFFSET_OUT_OF_RANGE" or not is_transient(error):
            self._partition_error(tp, state, error)
            return
        self._failures += 1
        if self._failures > self.config.retries:
            self._failures = 0
            raise error
        self._back_off()

    def _back_off(self) -> None:
        config = self.config
        self._retry_at = time.monotonic() + backoff_seconds(
            self._failures, config.retry_backoff_ms, config.retry_backoff_max_ms
        )

    def _send_fetch(self) -> _Fetch | None:
        config = self.config
        request = records_pb2.FetchRequest(
            max_wait_ms=config.fetch_max_wait_ms,
            min_bytes=config.fetch_min_bytes,
            max_bytes=config.fetch_max_bytes,
            isolation_level=self._isolation,  # type: ignore[arg-type]
        )
        if self._membership is not None:
            group_id, request.member_id, request.member_epoch = self._membership.metadata()
            request.group_id = group_id
        offsets: dict[TopicPartition, int] = {}
        for tp, state in self._states.items():
            if state.fetch_offset is None or state.error is not None:
                continue
            offsets[tp] = state.fetch_offset
            request.partitions.add(
                topic=tp.topic, partition=tp.partition, offset=state.fetch_offset,
                max_bytes=config.max_partition_fetch_bytes,
            )
        if not offsets:
            return None
        timeout = config.fetch_max_wait_ms / 1000.0 + self._timeout
        try:
            future, leaderless = self._fetches.send(request, timeout)
        except LogstoreError:  # no broker answers metadata right now
            self._failures += 1
            self._back_off()
            return None
        if leaderless:  # these sit this fetch out; metadata is read again after a backoff
            for tp in leaderless:
                offsets.pop(tp, None)
            self._back_off()
        return None if future is None else _Fetch(future, offsets)

    def _fetch_failed(self, exc: grpc.RpcError) -> None:
        error = error_from_rpc(exc, self.server)
        self._cluster.observe(error, None if self._cluster.clustered else self._cluster.address())
        if self._membership is not None and error.reason in GROUP_FETCH_REASONS:
            # the group changed under the fetch: the heartbeat learns how; fetch again shortly
            self._membership.wake()
            self._retry_at = time.monotonic() + 0.05
            return
        self._failures += 1
        if not is_transient(error) or self._failures > self.config.retries:
            self._failures = 0
            raise error from exc
        config = self.config
        self._retry_at = time.monotonic() + backoff_seconds(
            self._failures, config.retry_backoff_ms, config.retry_backoff_max_ms
        )

    def _advance(
        self, fetch: _Fetch, partitions: list[wire.FetchedPartition]
    ) -> list[tuple[TopicPartition, wire.FetchedPartition]]:
        """Move fetch offsets past a response and note errors; returns the partitions to keep."""
        accepted = []
        for fetched in partitions:
            tp = TopicPartition(fetched.topic, fetched.partition)
            state = self._states.get(tp)
            if state is None or fetch.offsets.get(tp) != state.fetch_offset:
                continue  # unassigned or moved by seek since the fetch went out
            if fetched.error is not None and fetched.error.reason:
                error = error_from_detail(fetched.error)
                if error.reason in MOVED_REASONS:  # not the leader any more: ask again, later
                    self._cluster.observe(error)
                    self._failures += 1
                    self._back_off()
                    continue
                self._partition_error(tp, state, error)
                continue
            state.high_watermark = fetched.high_watermark
            state.log_start_offset = fetched.log_start_offset
            if fetched.next_offset > (state.fetch_offset or 0):
                state.fetch_offset = fetched.next_offset
            accepted.append((tp, fetched))
        return accepted

    def _store(self, accepted: list[tuple[TopicPartition, wire.FetchedPartition]]) -> None:
        for tp, fetched in accepted:
            state = self._states[tp]
            if len(fetched.records):
                self._buffer[tp] = _Buffered(fetched, state.position)
            elif state.position is not None and fetched.next_offset > state.position:
                state.position = fetched.next_offset  # only control batches or a gap

    def _columns(self, buffered: _Buffered, as_bytes: bool) -> RecordColumns:
        """Decode once: over a bytes copy for record tuples, over the fetched view for columns."""
        if buffered.columns is None:
            data: Any = bytes(buffered.records) if as_bytes else buffered.records
            buffered.columns = decode_columns(
                data, min_offset=buffered.start, include=buffered.include()
            )
        return buffered.columns

    def _partition_error(self, tp: TopicPartition, state: _State, error: LogstoreError) -> None:
        if error.reason == "OFFSET_OUT_OF_RANGE" and self.config.auto_offset_reset != "error":
            state.position = state.fetch_offset = None  # re-resolved by auto_offset_reset
            self._buffer.pop(tp, None)
            return
        state.error = error

    def _raise_partition_errors(self) -> None:
        for state in self._states.values():
            if state.error is not None:
                raise state.error

    # -- offsets -----------------------------------------------------------------------------------

    def _initial_positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where partitions without a position start before ``auto_offset_reset`` applies: the
        group's committed offsets (read_committed waits for pending transactional commits)."""
        if not self._group_id:
            return {}
        committed = fetch_committed(
            self._group_stub, self.server, self._group_id, partitions, self.config,
            require_stable=self.config.isolation_level == "read_committed",
        )
        found = {tp: offset for tp, offset in committed.items() if offset is not None}
        self._committed.update(found)
        return found

    def _resolve_positions(self) -> None:
        missing = [tp for tp, state in self._states.items() if state.position is None]
        if not missing:
            return
        found = self._initial_positions(missing)
        rest = [tp for tp in missing if tp not in found]
        if rest:
            reset = self.config.auto_offset_reset
            if reset == "error":
                raise InvalidRequestError(
                    f"no position for {', '.join(f'{t}/{p}' for t, p in rest)}: seek first "
                    f"(auto_offset_reset is 'error')",
                    field="auto_offset_reset",
                )
            found.update(self._list(dict.fromkeys(rest, reset)))
        for tp, offset in found.items():
            self._set_position(tp, offset)

    def _set_position(self, tp: TopicPartition, offset: int) -> None:
        state = self._states[tp]
        state.position = state.fetch_offset = offset
        state.error = None
        self._buffer.pop(tp, None)

    def _seek_to(self, query: OffsetQuery, partitions: tuple[Partition, ...]) -> None:
        for tp, offset in self._list(dict.fromkeys(self._tps(partitions), query)).items():
            self._set_position(tp, offset)

    def _list(self, queries: dict[TopicPartition, OffsetQuery],
              isolation: int | None = None) -> dict[TopicPartition, int]:
        config = self.config
        level = self._isolation if isolation is None else isolation
        return call_with_retries(
            lambda: list_offsets_routed(self._cluster, queries, timeout=self._timeout,
                                        isolation_level=level),
            server=self.server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )

    def _partition_count(self, topic: str) -> int:
        with refused_as("read", topic):  # a refused describe is reported as the read it is for
            return self._cluster.topic(topic).partition_count

    def _tp(self, partition: Partition) -> TopicPartition:
        """A TopicPartition, a (topic, partition) tuple, or a bare number when one topic is
        assigned; it must be assigned."""
        if isinstance(partition, int):
            topics = {tp.topic for tp in self._states}
            if len(topics) != 1:
                raise ValueError("a bare partition number needs exactly one assigned topic")
            tp = TopicPartition(topics.pop(), partition)
        else:
            tp = TopicPartition(*partition)
        if tp not in self._states:
            raise ValueError(f"{tp.topic}/{tp.partition} is not assigned to this consumer")
        return tp

    def _tps(self, partitions: Iterable[Partition]) -> list[TopicPartition]:
        chosen = [self._tp(p) for p in partitions]
        return chosen or list(self._states)
