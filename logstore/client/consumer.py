"""``Consumer``: the record API over a ``Fetcher`` (positions and fetches) and a ``ConsumerGroup``.

The consumer holds two parts and hands each call to one of them:

- ``fetcher.Fetcher`` owns the assigned partitions' positions, the fetch kept in flight (or the
  ``Subscribe`` streams), and the buffer of fetched, not yet returned records;
- ``consumer_group.ConsumerGroup`` owns the group side: commits, auto-commit, and applying the
  assignments the heartbeat thread (``group.Membership``) learns, inside ``poll``.

Positions. ``position`` is the next offset ``poll`` returns. ``seek`` moves it and drops what was
buffered. A partition with no position starts at the group's committed offset, else at
``auto_offset_reset`` (earliest or latest, or an error); so does one whose position fell out of
the log (OFFSET_OUT_OF_RANGE).

Thread-safety: none; use a consumer from one thread (as with Kafka's). Its heartbeat thread only
talks to the broker and to ``Membership``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from logstore.client.channel import READER_POLLS_STREAMS, Channels, refused_as
from logstore.client.config import ConsumerConfig, Credentials, build, resolve_server
from logstore.client.consumer_group import ConsumerGroup, RebalanceCallback
from logstore.client.fetcher import Fetcher, Partition
from logstore.client.metadata import Metadata
from logstore.client.models import ConsumerRecord, GroupMetadata, TopicPartition
from logstore.client.routing import any_broker, group_coordinator
from logstore.errors import InvalidRequestError
from logstore.records import RecordColumns

__all__ = ["Consumer", "Partition", "RebalanceCallback"]


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
        # Subscribe streams are read by their reader threads directly (one thread hop less)
        self._channels = Channels(credentials, (READER_POLLS_STREAMS,))
        self._cluster = Metadata(
            self.server, self._channels, retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
            timeout_s=config.request_timeout_ms / 1000.0, max_age_ms=config.metadata_max_age_ms,
        )
        #: Calls any broker answers; group calls go to the group's coordinator.
        self._stub: Any = any_broker(self._cluster)
        group_stub: Any = (group_coordinator(self._cluster, config.group_id)
                           if config.group_id else self._stub)
        self._group = ConsumerGroup(config, self.server, group_stub)
        self._fetcher = Fetcher(config, self.server, self._cluster, self._channels,
                                self._group.initial_positions)
        self._group.fetcher = self._fetcher
        self._closed = False

    # -- assignment ------------------------------------------------------------------------------

    def assign(self, partitions: str | Iterable[TopicPartition | tuple[str, int] | str]) -> None:
        """Read exactly these partitions: ``TopicPartition`` tuples, or topic names (all their
        partitions). Replaces the previous assignment; partitions kept keep their position.
        With a ``group_id``, new partitions start at the group's committed offsets."""
        if self._group.membership is not None:
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
        self._fetcher.assign(wanted)

    def assignment(self) -> list[TopicPartition]:
        return list(self._fetcher.states)

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
        if not self._group.group_id:
            raise InvalidRequestError("subscribe() needs a consumer with a group_id",
                                      field="group_id")
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names:
            raise InvalidRequestError("subscribe() needs at least one topic", field="topics")
        self._group.subscribe(names, on_assign, on_revoke, on_lost)

    def group_metadata(self) -> GroupMetadata:
        """(group_id, member_id, member_epoch) for ``Producer.send_offsets_to_transaction``."""
        return self._group.group_metadata()

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
        return self._group.commit(offsets, asynchronous)

    def committed(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed) of ``partitions``
        (default: the partitions held)."""
        self._group.require()
        chosen = self._fetcher.tps(partitions) if partitions else list(self._fetcher.states)
        return self._group.committed(chosen)

    def position_offsets(self) -> dict[TopicPartition, int]:
        """``{TopicPartition: position}`` of every partition held that has a position: what
        ``commit()`` commits by default, and what a transaction should commit
        (``Producer.send_offsets_to_transaction``)."""
        return self._fetcher.position_offsets()

    # -- positions -------------------------------------------------------------------------------

    def seek(self, partition: Partition, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        tp = self._fetcher.tp(partition)
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        self._fetcher.set_position(tp, offset)

    def seek_to_beginning(self, *partitions: Partition) -> None:
        """Move to the log start offset (all assigned partitions when none are named)."""
        self._fetcher.seek_to("earliest", partitions)

    def seek_to_end(self, *partitions: Partition) -> None:
        """Move to the log end offset: only records produced from now on are read."""
        self._fetcher.seek_to("latest", partitions)

    def seek_to_timestamp(
        self, timestamp: int | datetime.datetime, *partitions: Partition
    ) -> None:
        """Move to the first record with a timestamp at or after ``timestamp`` (ms since the
        epoch, or a datetime; naive is local time), or to the end when there is none."""
        self._fetcher.seek_to(timestamp, partitions)

    def position(self, partition: Partition) -> int:
        """The offset of the next record ``poll`` returns for ``partition``."""
        tp = self._fetcher.tp(partition)
        self._fetcher.resolve_positions()
        position = self._fetcher.states[tp].position
        assert position is not None
        return position

    def beginning_offsets(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int]:
        return self._fetcher.list_offsets(dict.fromkeys(self._fetcher.tps(partitions), "earliest"))

    def end_offsets(self, partitions: Iterable[Partition] = ()) -> dict[TopicPartition, int]:
        """Log end offsets (one past the last record) of the partitions (default: assigned)."""
        return self._fetcher.list_offsets(dict.fromkeys(self._fetcher.tps(partitions), "latest"))

    def offsets_for_time(
        self, timestamp: int | datetime.datetime, partitions: Iterable[Partition] = ()
    ) -> dict[TopicPartition, int]:
        return self._fetcher.list_offsets(dict.fromkeys(self._fetcher.tps(partitions), timestamp))

    def highwater(self, partition: Partition) -> int:
        """The high watermark the last fetch of ``partition`` reported (-1 before one)."""
        return self._fetcher.states[self._fetcher.tp(partition)].high_watermark

    # -- reading ---------------------------------------------------------------------------------

    def poll(
        self, max_records: int | None = None, timeout: float | None = 1.0
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` (default ``max_poll_records``) records, waiting up to
        ``timeout`` seconds (None: until some arrive) when none are buffered."""
        limit = max_records if max_records is not None else self.config.max_poll_records
        if limit <= 0:
            raise ValueError(f"max_records must be positive, not {limit}")
        self._before_poll(timeout)
        return self._fetcher.take_records(limit, ConsumerRecord)

    def poll_columns(self, timeout: float | None = 1.0) -> dict[TopicPartition, RecordColumns]:
        """Every buffered record as one ``RecordColumns`` per partition: numpy ``offsets`` and
        ``timestamps``, and ``values()`` as memoryviews of the fetched bytes (no copy).
        Waits up to ``timeout`` seconds (None: until some arrive) when none are buffered."""
        self._before_poll(timeout)
        return self._fetcher.take_columns()

    def _before_poll(self, timeout: float | None) -> None:
        """The group's part of a poll, then wait for records unless some are buffered."""
        if self._group.group_id:
            self._group.poll()
        if not self._fetcher.buffer:
            if self._closed:
                raise InvalidRequestError("the consumer is closed")
            self._fetcher.fill(timeout, self._group.reconcile)

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
        return Link(self._channels, lambda tp: self._cluster.leader(*tp), self.config, self._fetcher.list_offsets,
                    self._partition_count, self._cluster.stream_port)

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
            self._group.close()
        finally:
            self._closed = True
        self._fetcher.cancel()
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

    def _partition_count(self, topic: str) -> int:
        with refused_as("read", topic):  # a refused describe is reported as the read it is for
            return self._cluster.topic(topic).partition_count
