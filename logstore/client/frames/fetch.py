"""Reading a range of partitions over ``Subscribe`` streams, in bounded memory.

Each partition of the range gets a stream from its first offset (at most
``max_subscribed_partitions`` at once; the next opens when one finishes). The streams push into
one queue of ``QUEUE_MESSAGES`` slots: when the caller is slower than the broker, a reader thread
blocks on the full queue, its stream is no longer read, and HTTP/2 flow control stops the
broker. So memory stays at a few messages of ``MESSAGE_BYTES`` however long the range.

Each stream is read straight off its own socket (``socket_stream``: one copy per message where
gRPC's Python receive makes three) unless the client uses TLS or the broker's address is not a
``host:port``; such streams, and a partition whose socket stream ended before it was done, go
through gRPC (``subscription``) from the next offset not yet taken, which raises the typed
error or carries on. ``SOCKET_STREAMS = False`` reads every stream through gRPC.

A stream is dropped as soon as a message reaches the partition's stop offset. An unreachable
broker is retried with the consumer's backoff (``retries``) from the next offset not yet taken;
any other error (an offset out of range, an unknown topic) is raised, typed.

Threading: used from the caller's thread only; the reader threads touch only the queue.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

from logstore.client import wire
from logstore.client.channel import is_transient
from logstore.client.config import ISOLATION_LEVELS, backoff_seconds
from logstore.client.frames.socket_stream import Ended, SocketStream, split_address
from logstore.client.frames.span import Link
from logstore.client.models import TopicPartition
from logstore.client.subscription import Subscriptions
from logstore.errors import LogstoreError, UnavailableError

#: Messages that may wait in the queue (each up to ``MESSAGE_BYTES``).
QUEUE_MESSAGES = 4

#: What each Subscribe message may hold unless the consumer's ``max_partition_fetch_bytes`` says
#: otherwise (the broker caps it at its ``max_subscribe_bytes``, 16 MiB by default). Larger than
#: ``poll()``'s 4 MiB: gRPC costs ~0.5 ms a message besides its bytes, and a table keeps them all.
MESSAGE_BYTES = 16 << 20

#: Read streams off their own sockets where that is possible (see above).
SOCKET_STREAMS = True


def _socket_token(link: Link) -> tuple[bool, str | None]:
    """(may streams use their own sockets, the bearer token to send): not under TLS."""
    credentials = link.channels.credentials
    if credentials is None:
        return SOCKET_STREAMS, None
    return SOCKET_STREAMS and not credentials.tls, credentials.token


def iter_messages(
    link: Link, topic: str, spans: dict[int, tuple[int, int]], isolation_level: str,
) -> Iterator[tuple[int, int, int, wire.FetchedPartition]]:
    """``(partition, first, stop, message)`` for every message that carries part of a span;
    a message may hold records before ``first`` or from ``stop`` on (the caller trims)."""
    config = link.config
    pending = {p: list(span) for p, span in spans.items() if span[0] < span[1]}
    if not pending:
        return
    max_bytes = config.max_partition_fetch_bytes or MESSAGE_BYTES
    isolation = ISOLATION_LEVELS[isolation_level]
    subscriptions = Subscriptions(link.channels, link.route, isolation, max_bytes, QUEUE_MESSAGES)
    sockets_allowed, token = _socket_token(link)
    streams: dict[int, Any] = {}  # partition -> its current stream (a SocketStream or gRPC's)
    through_grpc: set[int] = set()  # partitions whose socket stream ended early

    def open_stream(partition: int) -> None:
        tp = TopicPartition(topic, partition)
        if sockets_allowed and partition not in through_grpc:
            address = link.route(tp)
            if split_address(address) is not None:
                streams[partition] = SocketStream(address, tp, pending[partition][0], isolation,
                                                  max_bytes, subscriptions.queue, token)
                return
        subscriptions.ensure(tp, pending[partition][0])
        streams[partition] = subscriptions.streams[tp]

    def drop(partition: int) -> None:
        stream = streams.pop(partition, None)
        if isinstance(stream, SocketStream):
            stream.close()
        elif stream is not None:
            subscriptions.drop(stream.tp)

    waiting = sorted(pending)
    failures = 0
    idle_s = config.request_timeout_ms / 1000.0 + config.fetch_max_wait_ms / 1000.0
    try:
        while pending:
            while waiting and len(streams) < max(1, config.max_subscribed_partitions):
                open_stream(waiting.pop(0))
            try:
                stream, item = subscriptions.queue.get(timeout=idle_s)
            except queue.Empty:
                stuck = ", ".join(f"{topic}/{p} at {span[0]}" for p, span in pending.items())
                raise UnavailableError(
                    f"no records arrived for {idle_s:.0f} s while reading {stuck}"
                ) from None
            partition = stream.tp.partition
            if streams.get(partition) is not stream or stream.closed:
                continue
            span = pending[partition]
            if isinstance(item, Ended):  # gRPC from here: its typed error, or it carries on
                drop(partition)
                through_grpc.add(partition)
                open_stream(partition)
                continue
            if isinstance(item, LogstoreError):
                drop(partition)
                failures += 1
                if not is_transient(item) or failures > config.retries:
                    raise item
                time.sleep(backoff_seconds(failures, config.retry_backoff_ms,
                                           config.retry_backoff_max_ms))
                open_stream(partition)
                continue
            failures = 0
            if item.next_offset > span[0]:
                if len(item.records):
                    yield partition, span[0], span[1], item
                span[0] = stream.next_offset = item.next_offset
            if span[0] >= span[1]:
                drop(partition)
                del pending[partition]
    finally:
        for partition in list(streams):
            drop(partition)
        subscriptions.close()
