"""``ShareConsumer``: a member of a share group (queue mode). Records come one by one from the
same partitions to any number of members; each is acknowledged on its own.

::

    with ShareConsumer("127.0.0.1:7070", "mailer", ["emails"], lock_ms=60_000) as consumer:
        for record in consumer:                 # or consumer.poll(timeout=1.0)
            try:
                send_email(record.value)
                record.ack()                    # done
            except TemporaryError as exc:
                record.release(delay_ms=5_000, error=str(exc))   # again in 5 s (any member)
            except Exception as exc:
                record.reject(error=repr(exc))  # poison: archived, to the dead-letter topic

A record returned by ``poll`` is locked to this member for ``lock_ms`` (default: the group's,
30 s): no other member gets it meanwhile. ``ack()``, ``release(delay_ms=None, error="")``,
``reject(error="")`` queue the acknowledgement; queued acknowledgements go with the next
``poll`` (one call does both), or with ``commit()`` / ``close()``. ``release`` without a delay
follows the group's backoff list. ``renew()`` extends the lock by ``lock_ms`` and is sent at
once (with whatever else is queued). A record not acknowledged before its lock expires becomes
available again, to any member, with its delivery count (``record.delivery_count``) one higher.
``acknowledge(records, kind)`` does the same for many records at once.

Refusals. An acknowledgement of a record this member no longer holds (its lock expired and it
went to another member, it was acknowledged already) is refused by the broker with
``RecordNotAcquiredError`` (reason ``RECORD_NOT_ACQUIRED``); the others are applied. ``commit()``
raises the first refusal collected since the last commit (from its own call or from the
piggybacked acknowledgements of earlier polls); ``refused`` lists them all, and
``commit(raise_refused=False)`` returns them instead. A call that fails (the broker is
unreachable) queues its acknowledgements again; they go with the next call.

In a cluster (``server`` may list several brokers, ``"h1:7070,h2:7070"``) each partition's
share-partition is served by its leader: a poll asks every leader of the topics' partitions and
acknowledgements go to their partition's leader (``share_routing.py``). When a leader dies, its
partitions' records that were acquired and not acknowledged come back at the new leader (their
delivery counts kept, after no lock), so acknowledging one of them is refused with
``RECORD_NOT_ACQUIRED`` — the record is delivered again.

Transport. On a single node the polls of a stream-mode consumer go over one share stream on
the broker's stream port (``share_channel.py``: no gRPC threads), or over a gRPC
``ShareStream`` call under TLS, when the broker has no stream port, or for ``NO_CHANNEL_S``
after that port could not be used (not reachable, or it broke before answering anything).
Both serve the same requests and answers.

Pipelining. With ``prefetch=N`` (stream mode only) the consumer keeps N fetches in flight
beyond the one ``poll`` waits for: while the caller works on a batch, the broker already
acquires the next ones (each with a lock; records prefetched count as held by this member). A
``poll`` sends one fetch, carrying the acknowledgements queued so far, then returns the oldest
answer, so an acknowledgement reaches the broker with the next ``poll`` as without prefetch (a
fetch that carries acknowledgements ends the long polls of the prefetched fetches before it:
they are answered at once, possibly empty, and the acknowledgements are applied without waiting).
Default 0: a poll acquires only what it returns. Prefetched records are released at once by
``close()`` (or come back after their lock if the process dies). A poll may wait up to the
timeout of the poll that sent the fetch it returns. When the stream breaks, the
acknowledgements of every fetch not answered are queued again, as for one. An answer that
arrived before the broker went down is still returned by a later poll (after a restart too):
its records' locks did not survive a restart (they became Available, their delivery counts
kept), so the restarted broker may hand them to another member, and acknowledging them is
refused (``RecordNotAcquiredError``) — at-least-once, as for any record a worker holds
when its broker restarts.

``close()`` sends what is queued and leaves the group: the records it still holds become
available to the other members at once. Thread-safety: ``ack``/``release``/``reject`` and
``acknowledge`` may be called from any thread; ``poll``, ``commit`` and ``close`` from one
thread at a time. ``AsyncShareConsumer`` is the asyncio twin.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from logstore.api.v1 import share_pb2
from logstore.client import share_channel
from logstore.client.channel import Channels, error_from_detail, translate_errors
from logstore.client.config import Credentials, bootstrap_addresses, resolve_server
from logstore.client.metadata import Metadata
from logstore.client.produce_channel import NO_CHANNEL_S
from logstore.client.share_channel import ShareChannel
from logstore.client.share_routing import ShareRouter
from logstore.client.share_stream import ShareStream
from logstore.errors import LogstoreError, RecordNotAcquiredError, UnavailableError
from logstore.records import decode_columns
from logstore.records.headers import Headers

#: Acknowledgement kinds by name (``acknowledge(records, kind)``).
KINDS = {
    "accept": share_pb2.ACKNOWLEDGE_ACCEPT,
    "release": share_pb2.ACKNOWLEDGE_RELEASE,
    "reject": share_pb2.ACKNOWLEDGE_REJECT,
    "renew": share_pb2.ACKNOWLEDGE_RENEW,
}


class Accepted:
    """The ``ack()``-ed offsets of one partition not sent yet, and the consumer they belong to.

    Thread-safety without a lock: ``ack()`` only appends (one atomic list operation) and the
    consumer takes a prefix (``taken()``: a copy of the first n, then a delete of the same n, each
    atomic), so an offset appended meanwhile stays for the next send."""

    __slots__ = ("consumer", "offsets")

    def __init__(self, consumer: ShareConsumer) -> None:
        self.consumer = consumer
        self.offsets: list[int] = []

    def taken(self) -> list[int]:
        count = len(self.offsets)
        first = self.offsets[:count]
        del self.offsets[:count]
        return first


class ShareRecord(NamedTuple):
    """One acquired record. ``delivery_count`` is 1 on its first delivery. ``accepted`` is the
    internal queue ``ack()`` appends to (``consumer`` is its consumer)."""

    accepted: Accepted
    topic: str
    partition: int
    delivery_count: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def __repr__(self) -> str:
        return (f"ShareRecord(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"delivery_count={self.delivery_count}, key={self.key!r}, value={self.value!r})")

    @property
    def consumer(self) -> ShareConsumer:
        return self.accepted.consumer

    def ack(self) -> None:
        """Done: it is never delivered again (queued: its offset appended to a list)."""
        self.accepted.offsets.append(self.offset)

    def release(self, delay_ms: int | None = None, error: str = "") -> None:
        """Give it back: available again now (``delay_ms=0``), after ``delay_ms``, or (None)
        after the group's backoff step for its delivery count."""
        self.consumer.acknowledge([self], "release", delay_ms=delay_ms, error=error)

    def reject(self, error: str = "") -> None:
        """Poison: archived at once and copied to the group's dead-letter topic."""
        self.consumer.acknowledge([self], "reject", error=error)

    def renew(self) -> None:
        """Still working on it: the lock runs ``lock_ms`` from now again (sent at once)."""
        self.consumer.acknowledge([self], "renew")
        self.consumer.commit()


_Key = tuple[str, int, int, int, str]  # topic, partition, kind, delay (-1 = backoff), error
_ACCEPT = int(share_pb2.ACKNOWLEDGE_ACCEPT)
#: Most fetches ``prefetch`` may keep in flight.
MAX_PREFETCH = 16


class ShareConsumer:
    def __init__(
        self,
        server: str | None,
        group_id: str,
        topics: str | Iterable[str],
        *,
        lock_ms: int = 0,
        max_records: int = 500,
        max_bytes: int = 0,
        member_id: str | None = None,
        timeout: float = 30.0,
        stream: bool = True,
        prefetch: int = 0,
        **credentials: Any,
    ) -> None:
        """``lock_ms``: 0 = the group's (30 s unless configured). ``max_records``: most records
        one ``poll`` acquires. ``stream``: polls are messages of one ``ShareStream`` call (the
        default; cheaper) rather than a ``ShareFetch`` call each. ``prefetch``: fetches kept in
        flight beyond the one a ``poll`` waits for (0..16; stream mode only; see "Pipelining"
        above). ``credentials``: ``tls_ca``, ``tls_cert``, ``tls_key``, ``token``."""
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        if not 0 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be within 0..{MAX_PREFETCH}, not {prefetch}")
        if prefetch and not stream:
            raise ValueError("prefetch needs stream=True (fetches pipelined over one ShareStream call)")
        if lock_ms < 0:
            raise ValueError(f"lock_ms must not be negative, not {lock_ms}")
        self.server = resolve_server(server)
        self.group_id = group_id
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.lock_ms = lock_ms
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.member_id = member_id or uuid.uuid4().hex
        self.timeout = timeout
        self.stream = stream
        self.prefetch = prefetch
        self._stream: ShareStream | ShareChannel | None = None
        #: Until then (monotonic s) the broker's stream port is left out: it could not be used.
        self._no_channel_until = 0.0
        self._channels = Channels(Credentials.take(credentials))
        if credentials:
            raise TypeError(f"unknown ShareConsumer options: {', '.join(sorted(credentials))}")
        #: The first bootstrap address's stub (all calls on a single node).
        self._stub = self._channels.stub(bootstrap_addresses(self.server)[0])
        self._router = ShareRouter(
            Metadata(self.server, self._channels, retries=2, retry_backoff_ms=100.0,
                     retry_backoff_max_ms=1000.0, timeout_s=timeout), self._channels, timeout)
        #: Whether the brokers are a cluster (known after the first call).
        self._clustered: bool | None = None
        self._lock = threading.Lock()
        self._pending: dict[_Key, list[int]] = {}
        #: ``ack()``-ed offsets by (topic, partition): the per-record hot path, one append.
        self._accepted: dict[tuple[str, int], Accepted] = {}
        #: Refusals since the last ``commit()``.
        self.refused: list[RecordNotAcquiredError | LogstoreError] = []
        self._closed = False

    # -- acknowledgements ---------------------------------------------------------------------

    def acknowledge(self, records: Iterable[ShareRecord], kind: str = "accept", *,
                    delay_ms: int | None = None, error: str = "") -> None:
        """Queue ``kind`` ("accept", "release", "reject", "renew") for every record. Accepting
        the records of a poll this way costs about what ``record.ack()`` on each does."""
        number = KINDS.get(kind)
        if number is None:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if delay_ms is not None and (delay_ms < 0 or kind != "release"):
            raise ValueError("delay_ms is for release only and must not be negative")
        if number == _ACCEPT and not error:
            records = self._accept_own(records)  # the ack() path; what is left: another consumer's
        delay = -1 if delay_ms is None else int(delay_ms)
        with self._lock:
            for record in records:
                self._pending.setdefault((record.topic, record.partition, number, delay, error), []).append(record.offset)

    def _accept_own(self, records: Iterable[ShareRecord]) -> list[ShareRecord]:
        """Queue the acceptance of this consumer's records as ``ack()`` does (one append each,
        no lock, no key); the records of other consumers are returned."""
        others: list[ShareRecord] = []
        last: Accepted | None = None
        append: Callable[[int], None] | None = None
        for record in records:
            accepted = record.accepted
            if accepted is not last:
                last = accepted
                append = accepted.offsets.append if accepted.consumer is self else None
            if append is None:
                others.append(record)
            else:
                append(record.offset)
        return others

    def _take_pending(self) -> list[share_pb2.ShareAcknowledgement]:
        """The queued acknowledgements as ranges of consecutive offsets (numpy)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (topic, partition), accepted in list(self._accepted.items()):
            if accepted.offsets:
                pending.setdefault((topic, partition, _ACCEPT, -1, ""), []).extend(accepted.taken())
        messages = []
        for (topic, partition, kind, delay, error), offsets in pending.items():
            ordered = np.array(offsets, dtype=np.int64)
            if len(ordered) > 1 and not (ordered[1:] > ordered[:-1]).all():
                ordered = np.unique(ordered)  # (acks in offset order need no sort)
            breaks = np.flatnonzero(ordered[1:] != ordered[:-1] + 1) + 1
            firsts = ordered[np.concatenate(([0], breaks))].tolist()
            lasts = ordered[np.concatenate((breaks - 1, [len(ordered) - 1]))].tolist()
            for first, last in zip(firsts, lasts, strict=True):
                message = share_pb2.ShareAcknowledgement(
                    topic=topic, partition=partition, first_offset=first, last_offset=last,
                    kind=kind, error=error)  # type: ignore[arg-type]
                if delay >= 0:
                    message.delay_ms = delay
                messages.append(message)
        return messages

    def _restore(self, messages: Sequence[share_pb2.ShareAcknowledgement]) -> None:
        """A call failed before the broker answered: queue its acknowledgements again."""
        with self._lock:
            for m in messages:
                key = (m.topic, m.partition, int(m.kind), m.delay_ms if m.HasField("delay_ms") else -1, m.error)
                self._pending.setdefault(key, []).extend(range(m.first_offset, m.last_offset + 1))

    def _collect(self, refused: Iterable[share_pb2.ShareAcknowledgementResult]) -> None:
        for item in refused:
            error = error_from_detail(item.error)
            error.first_offset = item.first_offset  # type: ignore[attr-defined]
            error.last_offset = item.last_offset  # type: ignore[attr-defined]
            self.refused.append(error)

    def _in_cluster(self) -> bool:
        if self._clustered is None:
            self._clustered = self._router.metadata.refresh().clustered
        return self._clustered

    @property
    def pending(self) -> int:
        """Records whose acknowledgement is queued, not sent yet."""
        with self._lock:
            return (sum(len(offsets) for offsets in self._pending.values())
                    + sum(len(accepted.offsets) for accepted in list(self._accepted.values())))

    def commit(self, *, raise_refused: bool = True) -> list[LogstoreError]:
        """Send the queued acknowledgements now (durable when this returns); raise the first
        refusal collected since the last commit, or with ``raise_refused=False`` return them
        all (each has ``first_offset`` and ``last_offset``: the range refused, of its
        ``topic``/``partition``)."""
        clustered = self._in_cluster()
        messages = self._take_pending()
        if messages and clustered:
            self._collect(self._router.acknowledge(share_pb2.ShareAcknowledgeRequest(
                group_id=self.group_id, member_id=self.member_id, acknowledgements=messages,
                lock_ms=self.lock_ms), self.topics, self._restore))
        elif messages:
            request = share_pb2.ShareAcknowledgeRequest(
                group_id=self.group_id, member_id=self.member_id, acknowledgements=messages,
                lock_ms=self.lock_ms)
            try:
                with translate_errors(self.server):
                    response = self._stub.ShareAcknowledge(request, timeout=self.timeout)
            except LogstoreError:
                self._restore(messages)
                raise
            self._collect(response.refused)
        refused, self.refused = self.refused, []
        if refused and raise_refused:
            raise refused[0]
        return refused

    # -- fetching -------------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Get ready to poll without acquiring anything: connect to the broker (waiting up to
        ``timeout`` seconds, default the consumer's ``timeout``), learn whether it is a cluster
        and, in stream mode on a single node, open the share stream (its channel or its
        ``ShareStream`` call). The first ``poll`` then does not pay for connecting (otherwise
        it does this itself). Raises
        ``UnavailableError`` when the broker cannot be reached in time."""
        if self._closed:
            raise ValueError("the share consumer is closed")
        wait_s = self.timeout if timeout is None else timeout
        # one Metadata call that waits for the connection (not grpc.channel_ready_future: its
        # connectivity-polling thread spends ~0.1 s of CPU around a connect, in every worker)
        try:
            self._clustered = self._router.metadata.refresh(wait_s=wait_s).clustered
        except UnavailableError:
            raise UnavailableError(f"{self.server}: no connection within {wait_s:g} s") from None
        if not self._in_cluster() and self.stream and (self._stream is None or self._stream.broken):
            self._stream = self._open_stream()

    def poll(self, timeout: float | None = 1.0, max_records: int | None = None) -> list[ShareRecord]:
        """Acquire up to ``max_records`` records, waiting up to ``timeout`` seconds for some;
        the queued acknowledgements go in the same call. With ``prefetch`` the answer is that
        of an earlier fetch (sent by an earlier poll, with that poll's limits)."""
        if self._closed:
            raise ValueError("the share consumer is closed")
        limit = max_records or self.max_records
        wait_ms = 30_000 if timeout is None else max(0, int(timeout * 1000))
        clustered = self._in_cluster()
        messages = self._take_pending()
        request = self._request(limit, wait_ms, messages)
        if clustered:  # (failed parts' acknowledgements are queued again by the router)
            response = self._router.fetch(request, wait_ms, self._restore)
        elif self.stream:
            response = self._stream_fetch(request, limit, wait_ms)
        else:
            try:
                with translate_errors(self.server):
                    response = self._stub.ShareFetch(request, timeout=self.timeout + wait_ms / 1000)
            except LogstoreError:
                self._restore(messages)
                raise
        self._collect(response.refused)
        records: list[ShareRecord] = []
        for part in response.partitions:
            records += self._records(part)
        return records

    def _request(self, limit: int, wait_ms: int,
                 messages: Sequence[share_pb2.ShareAcknowledgement]) -> share_pb2.ShareFetchRequest:
        return share_pb2.ShareFetchRequest(
            group_id=self.group_id, member_id=self.member_id, topics=self.topics,
            max_records=limit, max_bytes=self.max_bytes, max_wait_ms=wait_ms, lock_ms=self.lock_ms,
            acknowledgements=messages)

    def _stream_fetch(self, request: share_pb2.ShareFetchRequest, limit: int,
                      wait_ms: int) -> share_pb2.ShareFetchResponse:
        """Send ``request`` (and prefetches up to ``prefetch`` in flight); the oldest answer."""
        if self._stream is None or self._stream.broken:
            self._stream = self._open_stream()
        stream = self._stream
        stream.send(request)
        while len(stream.in_flight) <= self.prefetch:
            stream.send(self._request(limit, wait_ms, ()))
        oldest = stream.in_flight[0]
        try:
            return stream.receive()
        except LogstoreError:
            if isinstance(stream, ShareChannel) and stream.broken and not stream.answered:
                self._no_channel_until = time.monotonic() + NO_CHANNEL_S  # (not a broker's channel?)
            # the call died: no request in flight will be answered; else only the oldest failed
            for lost in (stream.in_flight if stream.broken else [oldest]):
                self._restore(lost.acknowledgements)
            if stream.broken:
                stream.in_flight.clear()
            raise

    def _open_stream(self) -> ShareStream | ShareChannel:
        """The broker's share channel on its stream port where it has one (not under TLS, not
        while left out), else a gRPC ``ShareStream`` call."""
        credentials = self._channels.credentials
        if (share_channel.CHANNEL_SHARE and not (credentials is not None and credentials.tls)
                and time.monotonic() >= self._no_channel_until):
            address = bootstrap_addresses(self.server)[0]
            port = self._router.metadata.stream_port(address, self._stream is not None)
            channel = ShareChannel.open(address, port, credentials.token if credentials else None,
                                        self.server) if port else None
            if channel is not None:
                return channel
            if port:
                self._no_channel_until = time.monotonic() + NO_CHANNEL_S
        return ShareStream(self._stub, self.server)

    def _records(self, part: share_pb2.AcquiredRecords) -> list[ShareRecord]:
        columns = decode_columns(part.records)
        accepted = self._accepted.get((part.topic, part.partition))
        if accepted is None:
            accepted = self._accepted[(part.topic, part.partition)] = Accepted(self)
        ranges = zip(list(part.first_offsets), list(part.last_offsets), list(part.delivery_counts), strict=True)
        out: list[ShareRecord] = []
        for first, last, count in ranges:
            lo = int(np.searchsorted(columns.offsets, np.int64(first)))
            hi = int(np.searchsorted(columns.offsets, np.int64(last), side="right"))
            if hi > lo:
                out += columns.slice(lo, hi).records(ShareRecord, accepted, part.topic, part.partition, count)
        return out

    def __iter__(self) -> Iterator[ShareRecord]:
        """Records as they come (poll after poll) until ``close()``."""
        while not self._closed:
            yield from self.poll(timeout=1.0)

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Send the queued acknowledgements and leave: held records go back at once (those of
        fetches still in flight too: the stream is ended first)."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            for lost in self._stream.in_flight:  # prefetches: their acks go with the leave
                self._restore(lost.acknowledgements)
            self._stream.close()
        try:
            request = share_pb2.ShareAcknowledgeRequest(
                group_id=self.group_id, member_id=self.member_id,
                acknowledgements=self._take_pending(), lock_ms=self.lock_ms, leave=True)
            if self._clustered:
                self._collect(self._router.acknowledge(request, self.topics, lambda _: None))
            else:
                with translate_errors(self.server):
                    response = self._stub.ShareAcknowledge(request, timeout=self.timeout)
                self._collect(response.refused)
        except LogstoreError as exc:
            if exc.reason != "UNKNOWN_GROUP":  # never fetched: nothing to leave
                raise
        finally:
            self._channels.close()

    def __enter__(self) -> ShareConsumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class AsyncShareConsumer:
    """``ShareConsumer`` for asyncio: ``poll``, ``commit`` and ``close`` are coroutines (run in a
    worker thread); records' ``ack``/``release``/``reject`` only queue, so they do not block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sync = ShareConsumer(*args, **kwargs)

    @property
    def member_id(self) -> str:
        return self._sync.member_id

    async def connect(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._sync.connect, timeout)

    async def poll(self, timeout: float | None = 1.0, max_records: int | None = None) -> list[ShareRecord]:
        return await asyncio.to_thread(self._sync.poll, timeout, max_records)

    def acknowledge(self, records: Iterable[ShareRecord], kind: str = "accept", **options: Any) -> None:
        self._sync.acknowledge(records, kind, **options)

    async def commit(self) -> None:
        await asyncio.to_thread(self._sync.commit)

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    async def __aiter__(self) -> AsyncIterator[ShareRecord]:
        while not self._sync._closed:
            for record in await self.poll(timeout=1.0):
                yield record

    async def __aenter__(self) -> AsyncShareConsumer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()
