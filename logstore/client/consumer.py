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

Consumer groups come later: ``group_id``, ``subscribe`` and ``commit`` are reserved, and
``_initial_positions`` is where committed offsets will be read.

Thread-safety: none; use a consumer from one thread (as with Kafka's).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import grpc

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.client import wire
from logstore.client.admin import OffsetQuery, list_offsets
from logstore.client.channel import (
    call_with_retries,
    error_from_detail,
    error_from_rpc,
    is_transient,
    open_channel,
    open_stub,
)
from logstore.client.config import (
    ISOLATION_LEVELS,
    ConsumerConfig,
    backoff_seconds,
    build,
    resolve_server,
)
from logstore.client.models import ConsumerRecord, TopicPartition
from logstore.errors import InvalidRequestError, LogstoreError
from logstore.records import BatchHeader, RecordColumns, decode_columns

FETCH = "/logstore.api.v1.LogStore/Fetch"

Partition = TopicPartition | tuple[str, int] | int


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
        if not self.aborted:
            return None
        aborted = self.aborted

        def committed(header: BatchHeader) -> bool:
            if not header.is_transactional:
                return True
            return not any(
                producer_id == header.producer_id and first <= header.base_offset <= last
                for producer_id, first, last in aborted
            )

        return committed


class _Fetch:
    __slots__ = ("future", "offsets")

    def __init__(self, future: Any, offsets: dict[TopicPartition, int]) -> None:
        self.future = future
        self.offsets = offsets


class Consumer:
    """Reads records from assigned partitions.

    ``Consumer(server, auto_offset_reset="latest", fetch_max_wait_ms=500, ...)``; the options are
    ``ConsumerConfig``'s. Assign partitions with ``assign``, move with ``seek*``, read with
    ``poll`` (records), ``poll_columns`` (numpy columns) or by iterating.
    """

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self.config: ConsumerConfig = build(ConsumerConfig, options)
        if self.config.group_id is not None:
            raise NotImplementedError("consumer groups are not supported yet: leave group_id unset")
        self.server = resolve_server(server)
        self._channel = open_channel(self.server)
        self._stub = open_stub(self._channel)
        self._fetch_method = self._channel.unary_unary(
            FETCH,
            request_serializer=records_pb2.FetchRequest.SerializeToString,
            response_deserializer=wire.decode_fetch_response,  # zero-copy records
        )
        self._isolation = ISOLATION_LEVELS[self.config.isolation_level]
        self._timeout = self.config.request_timeout_ms / 1000.0
        self._states: dict[TopicPartition, _State] = {}
        self._buffer: dict[TopicPartition, _Buffered] = {}
        self._inflight: _Fetch | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False

    # -- assignment ------------------------------------------------------------------------------

    def assign(self, partitions: str | Iterable[TopicPartition | tuple[str, int] | str]) -> None:
        """Read exactly these partitions: ``TopicPartition`` tuples, or topic names (all their
        partitions). Replaces the previous assignment; partitions kept keep their position."""
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

    def subscribe(self, topics: Iterable[str]) -> None:
        """Group subscription: comes with consumer groups. Use ``assign`` for now."""
        raise NotImplementedError("consumer groups are not supported yet: use assign()")

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Committing offsets comes with consumer groups."""
        raise NotImplementedError("consumer groups are not supported yet")

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
        if not self._buffer:
            self._fill(timeout)
        out: dict[TopicPartition, RecordColumns] = {}
        for tp, buffered in self._buffer.items():
            out[tp] = self._columns(buffered, as_bytes=False)
            self._states[tp].position = buffered.end
        self._buffer = {}
        return out

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
        if self._closed:
            return
        self._closed = True
        if self._inflight is not None:
            self._inflight.future.cancel()
            self._inflight = None
        self._channel.close()

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
        if not self._states:
            raise InvalidRequestError("no partitions are assigned: call assign() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
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

    def _send_fetch(self) -> _Fetch | None:
        config = self.config
        request = records_pb2.FetchRequest(
            max_wait_ms=config.fetch_max_wait_ms,
            min_bytes=config.fetch_min_bytes,
            max_bytes=config.fetch_max_bytes,
            isolation_level=self._isolation,  # type: ignore[arg-type]
        )
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
        return _Fetch(self._fetch_method.future(request, timeout=timeout), offsets)

    def _fetch_failed(self, exc: grpc.RpcError) -> None:
        error = error_from_rpc(exc, self.server)
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
                self._partition_error(tp, state, error_from_detail(fetched.error))
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
        """Where partitions without a position start before ``auto_offset_reset`` applies.
        Consumer groups will return committed offsets here; without a group there are none."""
        return {}

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

    def _list(self, queries: dict[TopicPartition, OffsetQuery]) -> dict[TopicPartition, int]:
        config = self.config
        return call_with_retries(
            lambda: list_offsets(self._stub, queries, server=self.server, timeout=self._timeout,
                                 isolation_level=self._isolation),
            server=self.server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )

    def _partition_count(self, topic: str) -> int:
        config = self.config
        description = call_with_retries(
            lambda: self._stub.DescribeTopic(admin_pb2.DescribeTopicRequest(name=topic),
                                             timeout=self._timeout),
            server=self.server,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )
        return int(description.partition_count)

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
