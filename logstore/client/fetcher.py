"""The consumer's fetch machinery: positions, the fetch kept in flight, streams, the buffer.

A fetch asks for every assigned partition from its *fetch offset*. As soon as a response arrives
the next fetch goes out from each partition's ``next_offset``, before the response is decoded, so
the broker works on the next fetch while the client decodes this one. A response is decoded only
once everything before it has been handed out; until then its partitions wait in ``buffer``.
Outside a group, and for up to ``max_subscribed_partitions`` partitions, the partitions are read
over ``Subscribe`` streams instead (``subscription``): the broker pushes each batch the moment
the high watermark passes it.

Positions. ``position`` is the next offset ``poll`` returns; ``fetch_offset`` is where the next
fetch starts (ahead of it while a response is buffered). ``set_position`` sets both and drops what
was buffered; a response to a fetch sent before it no longer matches ``fetch_offset`` and is
ignored. A partition with no position gets one from ``initial_positions`` (the group's committed
offsets), else from ``auto_offset_reset`` (earliest or latest via ``ListOffsets``, or an error);
so does one whose position fell out of the log (OFFSET_OUT_OF_RANGE).

Thread-safety: none; the consumer's thread owns a ``Fetcher`` (the stream reader threads touch
only ``Subscriptions.queue``).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
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
)
from logstore.client.config import ISOLATION_LEVELS, ConsumerConfig, backoff_seconds
from logstore.client.group import REJOIN_REASONS, Membership
from logstore.client.metadata import Metadata
from logstore.client.models import TopicPartition
from logstore.client.routing import Fetches
from logstore.client.socket_reader import Ended
from logstore.client.subscription import Subscriptions
from logstore.errors import InvalidRequestError, LogstoreError
from logstore.records import BatchHeader, RecordColumns, decode_columns
from logstore.records.decode import skip_aborted

Partition = TopicPartition | tuple[str, int] | int
#: Per-partition fetch errors that mean the partition's leader moved: fetched again from the
#: same offset, from the new leader, after a backoff.
MOVED_REASONS = ("NOT_LEADER", "FENCED_LEADER_EPOCH")
#: Fetch errors that mean the group moved on: the heartbeat thread sorts it out.
GROUP_FETCH_REASONS = (*REJOIN_REASONS, "PARTITION_NOT_ASSIGNED")


class PartitionState:
    """One assigned partition."""

    __slots__ = ("position", "fetch_offset", "high_watermark", "log_start_offset", "error")

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.high_watermark = -1
        self.log_start_offset = -1
        #: A per-partition error to raise from poll until the next seek.
        self.error: LogstoreError | None = None


class Buffered:
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


class Fetcher:
    """Where each assigned partition is (``states``), what was fetched and not handed out yet
    (``buffer``), and the fetch or streams that bring more.

    ``initial_positions(partitions)`` gives starting offsets for partitions without a position
    (the group's committed offsets; ``{}`` without a group). ``membership`` is set while the
    consumer is a group member: fetches then carry its identity and are never streamed.
    """

    def __init__(self, config: ConsumerConfig, server: str, cluster: Metadata, channels: Channels,
                 initial_positions: Callable[[list[TopicPartition]], dict[TopicPartition, int]]
                 ) -> None:
        self.config = config
        self.server = server
        self.cluster = cluster
        self.isolation = ISOLATION_LEVELS[config.isolation_level]
        self.timeout = config.request_timeout_ms / 1000.0
        self.states: dict[TopicPartition, PartitionState] = {}
        self.buffer: dict[TopicPartition, Buffered] = {}
        self.membership: Membership | None = None
        self._initial_positions = initial_positions
        self._fetches = Fetches(cluster)
        self._inflight: _Fetch | None = None
        self._subscriptions = Subscriptions(
            channels, lambda tp: cluster.leader(*tp), self.isolation,
            config.max_partition_fetch_bytes or min(config.fetch_max_bytes, 4 << 20),
            stream_port=cluster.stream_port,
        )
        self._failures = 0
        self._retry_at = 0.0

    def position_offsets(self) -> dict[TopicPartition, int]:
        """``{TopicPartition: position}`` of every partition held that has a position."""
        return {tp: state.position for tp, state in self.states.items()
                if state.position is not None}

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Hold exactly ``partitions``; those kept keep their position and buffer."""
        self.states = {tp: self.states.get(tp) or PartitionState() for tp in partitions}
        self.buffer = {tp: b for tp, b in self.buffer.items() if tp in self.states}

    def add(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.states[tp] = PartitionState()
        self.cancel()

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.states.pop(tp, None)
            self.buffer.pop(tp, None)
        self.cancel()

    def cancel(self) -> None:
        """Stop the streams and the fetch in flight (their answers no longer fit)."""
        self._subscriptions.close()
        if self._inflight is not None:
            self._inflight.future.cancel()
            self._inflight = None

    def take_records(self, limit: int, record_type: Any) -> list[Any]:
        """Up to ``limit`` buffered records, advancing positions past them."""
        out: list[Any] = []
        for tp in list(self.buffer):
            buffered = self.buffer[tp]
            columns = self.columns(buffered)
            take = min(limit - len(out), len(columns))
            out += columns.slice(0, take).records(record_type, tp.topic, tp.partition)
            state = self.states[tp]
            if take == len(columns):
                del self.buffer[tp]
                state.position = buffered.end
            else:
                buffered.columns = columns.slice(take)
                state.position = int(columns.offsets[take])
            if len(out) >= limit:
                break
        return out

    def take_columns(self) -> dict[TopicPartition, RecordColumns]:
        """Every buffered record as columns per partition, advancing positions past them."""
        out: dict[TopicPartition, RecordColumns] = {}
        for tp, buffered in self.buffer.items():
            out[tp] = self.columns(buffered)
            self.states[tp].position = buffered.end
        self.buffer = {}
        return out

    def fill(self, timeout: float | None, reconcile: Callable[[Membership], None]) -> None:
        """Wait for a fetch that carries records, buffering them (until ``timeout``); a group
        member's new assignment is applied by ``reconcile`` on the way."""
        membership = self.membership
        if not self.states and membership is None:
            raise InvalidRequestError("no partitions are assigned: call assign() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.buffer:
            if self._streaming():
                if not self._fill_from_streams(deadline):
                    return
                continue
            if membership is not None:
                if membership.changed.is_set():
                    reconcile(membership)
                if not self.states:  # nothing assigned (yet): wait for the group
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    membership.changed.wait(remaining)
                    continue
            self._raise_partition_errors()
            self.resolve_positions()
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
        if mode == "fetch" or self.membership is not None:
            self._subscriptions.close()
            return False
        if mode == "auto" and len(self.states) > self.config.max_subscribed_partitions:
            self._subscriptions.close()
            return False
        return True

    def _fill_from_streams(self, deadline: float | None) -> bool:
        """Take one message from the partitions' streams into the buffer; False on timeout."""
        self._raise_partition_errors()
        self.resolve_positions()
        subscriptions = self._subscriptions
        subscriptions.retain(set(self.states))
        now = time.monotonic()
        for tp, state in self.states.items():
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
        held = self.states.get(tp)
        if held is None:
            return True
        state = held
        if isinstance(item, Ended):  # its data channel cannot serve it: another transport
            error = subscriptions.ended(stream, item)
            if error is None:
                return True
            item = error
        if isinstance(item, LogstoreError):
            subscriptions.drop(tp)
            self.cluster.observe(item, stream.server)
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

    def _stream_failed(self, tp: TopicPartition, state: PartitionState, error: LogstoreError) -> None:
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
            isolation_level=self.isolation,  # type: ignore[arg-type]
        )
        if self.membership is not None:
            group_id, request.member_id, request.member_epoch = self.membership.metadata()
            request.group_id = group_id
        offsets: dict[TopicPartition, int] = {}
        for tp, state in self.states.items():
            if state.fetch_offset is None or state.error is not None:
                continue
            offsets[tp] = state.fetch_offset
            request.partitions.add(
                topic=tp.topic, partition=tp.partition, offset=state.fetch_offset,
                max_bytes=config.max_partition_fetch_bytes,
            )
        if not offsets:
            return None
        timeout = config.fetch_max_wait_ms / 1000.0 + self.timeout
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
        self.cluster.observe(error, None if self.cluster.clustered else self.cluster.address())
        if self.membership is not None and error.reason in GROUP_FETCH_REASONS:
            # the group changed under the fetch: the heartbeat learns how; fetch again shortly
            self.membership.wake()
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
            state = self.states.get(tp)
            if state is None or fetch.offsets.get(tp) != state.fetch_offset:
                continue  # unassigned or moved by seek since the fetch went out
            if fetched.error is not None and fetched.error.reason:
                error = error_from_detail(fetched.error)
                if error.reason in MOVED_REASONS:  # not the leader any more: ask again, later
                    self.cluster.observe(error)
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
            state = self.states[tp]
            if len(fetched.records):
                self.buffer[tp] = Buffered(fetched, state.position)
            elif state.position is not None and fetched.next_offset > state.position:
                state.position = fetched.next_offset  # only control batches or a gap

    def columns(self, buffered: Buffered) -> RecordColumns:
        """Decode once, over the fetched view (record tuples copy only their keys and values)."""
        if buffered.columns is None:
            buffered.columns = decode_columns(
                buffered.records, min_offset=buffered.start, include=buffered.include()
            )
        return buffered.columns

    def _partition_error(self, tp: TopicPartition, state: PartitionState, error: LogstoreError) -> None:
        if error.reason == "OFFSET_OUT_OF_RANGE" and self.config.auto_offset_reset != "error":
            state.position = state.fetch_offset = None  # re-resolved by auto_offset_reset
            self.buffer.pop(tp, None)
            return
        state.error = error

    def _raise_partition_errors(self) -> None:
        for state in self.states.values():
            if state.error is not None:
                raise state.error

    def resolve_positions(self) -> None:
        missing = [tp for tp, state in self.states.items() if state.position is None]
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
            found.update(self.list_offsets(dict.fromkeys(rest, reset)))
        for tp, offset in found.items():
            self.set_position(tp, offset)

    def set_position(self, tp: TopicPartition, offset: int) -> None:
        state = self.states[tp]
        state.position = state.fetch_offset = offset
        state.error = None
        self.buffer.pop(tp, None)

    def seek_to(self, query: OffsetQuery, partitions: tuple[Partition, ...]) -> None:
        for tp, offset in self.list_offsets(dict.fromkeys(self.tps(partitions), query)).items():
            self.set_position(tp, offset)

    def list_offsets(self, queries: dict[TopicPartition, OffsetQuery],
                     isolation: int | None = None) -> dict[TopicPartition, int]:
        config = self.config
        level = self.isolation if isolation is None else isolation
        return call_with_retries(
            lambda: list_offsets_routed(self.cluster, queries, timeout=self.timeout,
                                        isolation_level=level),
            server=self.server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )

    def tp(self, partition: Partition) -> TopicPartition:
        """A TopicPartition, a (topic, partition) tuple, or a bare number when one topic is
        assigned; it must be assigned."""
        if isinstance(partition, int):
            topics = {tp.topic for tp in self.states}
            if len(topics) != 1:
                raise ValueError("a bare partition number needs exactly one assigned topic")
            tp = TopicPartition(topics.pop(), partition)
        else:
            tp = TopicPartition(*partition)
        if tp not in self.states:
            raise ValueError(f"{tp.topic}/{tp.partition} is not assigned to this consumer")
        return tp

    def tps(self, partitions: Iterable[Partition]) -> list[TopicPartition]:
        chosen = [self.tp(p) for p in partitions]
        return chosen or list(self.states)
