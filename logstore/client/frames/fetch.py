"""Reading a range of partitions over ``Subscribe`` streams, in bounded memory.

Each partition of the range gets a stream from its first offset (at most
``max_subscribed_partitions`` at once; the next opens when one finishes). The streams push into
one queue of ``QUEUE_MESSAGES`` slots: when the caller is slower than the broker, a reader thread
blocks on the full queue, its stream is no longer read, and flow control (TCP's, or HTTP/2's) stops the
broker. So memory stays at a few messages of ``MESSAGE_BYTES`` however long the range.

Each stream is read straight off its own socket (one copy per message where gRPC's Python
receive makes three) unless the client uses TLS or the broker's address is not a ``host:port``:
off the broker's Subscribe data channel (``channel_stream``: the broker copies nothing either)
when the broker advertises a ``stream_port``, else as an HTTP/2 call to its gRPC port
(``socket_stream``). Streams that can use neither, and a partition whose socket stream ended
before it was done, go through gRPC (``subscription``) from the next offset not yet taken, which
raises the typed error or carries on; once a broker's data channel ended a stream early, the
read's other streams from that broker use HTTP/2 (unless the broker's metadata, asked again,
names another port: it restarted). ``CHANNEL_STREAMS = False`` leaves the data
channel out, ``SOCKET_STREAMS = False`` reads every stream through gRPC.

A stream is dropped as soon as a message reaches the partition's stop offset. An unreachable
broker is retried with the consumer's backoff (``retries``) from the next offset not yet taken;
any other error (an offset out of range, an unknown topic) is raised, typed.

Threading: used from the caller's thread only; the reader threads touch only the queue.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

from logstore.client import wire
from logstore.client.channel import is_transient
from logstore.client.config import ISOLATION_LEVELS, backoff_seconds
from logstore.client.frames.span import Link
from logstore.client.models import TopicPartition
from logstore.client.socket_reader import Ended, SocketReader
from logstore.client.subscription import Stream, Subscriptions
from logstore.errors import LogstoreError, UnavailableError

#: Messages that may wait in the queue (each up to ``MESSAGE_BYTES``).
QUEUE_MESSAGES = 4

#: What each Subscribe message may hold unless the consumer's ``max_partition_fetch_bytes`` says
#: otherwise (the broker caps it at its ``max_subscribe_bytes``, 16 MiB by default). Larger than
#: ``poll()``'s 4 MiB: gRPC costs ~0.5 ms a message besides its bytes, and a table keeps them all.
MESSAGE_BYTES = 16 << 20

#: Let streams be HTTP/2 calls read off their own sockets (``socket_stream``) where the data
#: channel is not there; False reads every stream through grpcio (the benchmark's A/B rows).
SOCKET_STREAMS = True

#: Read streams off the broker's Subscribe data channel when it has one (see above).
CHANNEL_STREAMS = True


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
    subscriptions = Subscriptions(
        link.channels, link.route, isolation, max_bytes, QUEUE_MESSAGES,
        stream_port=link.stream_port if CHANNEL_STREAMS and SOCKET_STREAMS else None,
        http2=SOCKET_STREAMS,
    )
    streams: dict[int, Stream | SocketReader] = {}  # partition -> its current stream

    def open_stream(partition: int) -> None:
        tp = TopicPartition(topic, partition)
        subscriptions.ensure(tp, pending[partition][0])
        streams[partition] = subscriptions.streams[tp]

    def drop(partition: int) -> None:
        if streams.pop(partition, None) is not None:
            subscriptions.drop(TopicPartition(topic, partition))

    waiting = sorted(pending)
    failures = 0
    idle_s = config.request_timeout_ms / 1000.0 + config.fetch_max_wait_ms / 1000.0
    try:
        while pending:
            while waiting and len(streams) < max(1, config.max_subscribed_partitions):
                open_stream(waiting.pop(0))
            try:
                taken, item = subscriptions.queue.get(timeout=idle_s)
            except queue.Empty:
                stuck = ", ".join(f"{topic}/{p} at {span[0]}" for p, span in pending.items())
                raise UnavailableError(
                    f"no records arrived for {idle_s:.0f} s while reading {stuck}"
                ) from None
            partition = taken.tp.partition
            stream = streams.get(partition)
            if stream is None or stream is not taken or stream.closed:
                continue
            span = pending[partition]
            if isinstance(item, Ended):  # another transport from here, or the channel's new port
                streams.pop(partition, None)
                error = subscriptions.ended(stream, item)
                if error is None:
                    open_stream(partition)
                    continue
                item = error
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
