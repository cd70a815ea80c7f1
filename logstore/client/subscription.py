"""Reading assigned partitions over ``Subscribe`` streams instead of one ``Fetch`` per batch.

A ``Fetch`` is a request and an answer: while the broker reads and sends, the consumer waits, and
while the consumer decodes, the broker idles (one fetch is kept ahead, but the next cannot go out
before the previous answer says where it ended). A ``Subscribe`` stream lets the broker push the
next batches as soon as the transport has room (TCP's or HTTP/2's flow control bounds what is in flight), so
both sides work at once and no call is set up per batch.

Each stream goes to its partition's leader (one channel per broker; on a single node all go to
the bootstrap address). Each stream is read by a small thread that hands decoded messages to one queue the consumer
waits on. A stream is tied to the offset it was opened at; the consumer replaces it after a seek.
Group members keep using ``Fetch``, whose requests carry the member's epoch for fencing.

Transports, the first that applies: the broker's Subscribe data channel (``channel_stream``:
plain TCP to the broker's advertised ``stream_port``, no copy on either end but the kernel's)
unless the client uses TLS, the broker has no stream port or its address is not ``host:port``;
then, for table reads only (``http2=True``), an HTTP/2 call to the gRPC port read off its own
socket (``frames.socket_stream``); else grpcio. A data channel that cannot serve a stream
(``Ended``: its port does not answer, or answers something else) is left out for that broker
for ``NO_CHANNEL_S`` (the metadata is asked again first: a broker that restarted on another
ephemeral port is read on the new one at once); an HTTP/2 stream that ended early leaves its
partition to grpcio. A stream that moved to another transport stays there until it is reopened.

Threading: ``Subscriptions`` is used from the consumer's thread only; its reader threads touch
only the shared queue.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

from logstore.api.v1 import records_pb2
from logstore.client import wire
from logstore.client.channel import Channels, error_from_rpc
from logstore.client.channel_stream import ChannelStream
from logstore.client.models import TopicPartition
from logstore.client.socket_reader import Ended, SocketReader, split_address
from logstore.errors import LogstoreError, UnavailableError

SUBSCRIBE = "/logstore.api.v1.LogStore/Subscribe"

#: How long a broker's data channel is left out after it could not serve a stream.
NO_CHANNEL_S = 30.0

#: stream_port(address, fresh) -> the data channel's port of the broker at ``address`` (0: none,
#: None: no broker answered), ``fresh`` asking the cluster again (``Metadata.stream_port``).
StreamPort: TypeAlias = Callable[[str, bool], "int | None"]


def _identity(data: bytes) -> bytes:
    return data


#: Where the streams' reader threads put (stream, message or error).
Outbox: TypeAlias = (
    "queue.SimpleQueue[tuple[Any, wire.FetchedPartition | LogstoreError | Ended]]"
    " | queue.Queue[tuple[Any, wire.FetchedPartition | LogstoreError | Ended]]"
)

class Stream:
    """One partition's subscription, from ``offset`` on."""

    def __init__(
        self, method: Any, tp: TopicPartition, offset: int, isolation: int, max_bytes: int,
        out: Outbox, server: str,
    ) -> None:
        self.tp = tp
        #: The broker it reads from.
        self.server = server
        self.next_offset = offset  # where the consumer expects the next message to continue
        self.closed = False
        self._server = server
        self._out = out
        request = records_pb2.SubscribeRequest(
            topic=tp.topic, partition=tp.partition, start=records_pb2.START_OFFSET,
            offset=offset, max_bytes=max_bytes, isolation_level=isolation,  # type: ignore[arg-type]
        )
        self._call = method(request)
        self._thread = threading.Thread(target=self._read, name=f"logstore-subscribe-{tp.topic}-{tp.partition}",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tp = self.tp
        try:
            for message in self._call:
                fetched, _start = wire.decode_subscribe_response(message, tp.topic, tp.partition)
                self._out.put((self, fetched))
            if not self.closed:  # the broker ended it (shutting down): reconnect
                self._out.put((self, UnavailableError("the broker ended the subscription")))
        except grpc.RpcError as exc:
            if not self.closed:
                self._out.put((self, error_from_rpc(exc, self._server)))
        except Exception as exc:  # a malformed message: surface it, do not hang the consumer
            if not self.closed:
                self._out.put((self, LogstoreError(f"bad Subscribe message: {exc}")))

    def close(self) -> None:
        self.closed = True
        self._call.cancel()


class Subscriptions:
    """The consumer's streams, one per partition it reads, each to the broker ``route(tp)``
    names (the partition's leader; ``route`` may raise a retriable ``NotLeaderError``)."""

    def __init__(self, channels: Channels, route: Callable[[TopicPartition], str], isolation: int,
                 max_bytes: int, queue_size: int = 0, *, stream_port: StreamPort | None = None,
                 http2: bool = False) -> None:
        """``queue_size`` > 0 bounds the messages waiting to be taken: a reader thread then
        blocks, and flow control stops the broker (``close`` releases them). ``stream_port``
        finds the brokers' data channels (None: no data channel); ``http2`` lets streams be
        HTTP/2 calls read off their own sockets (see above)."""
        self._channels = channels
        self._route = route
        self._methods: dict[str, Any] = {}
        self._isolation = isolation
        self._max_bytes = max_bytes
        self.queue: Outbox = queue.Queue(queue_size) if queue_size > 0 else queue.SimpleQueue()
        self.streams: dict[TopicPartition, Stream | SocketReader] = {}
        credentials = channels.credentials
        sockets = credentials is None or not credentials.tls
        self._token = credentials.token if credentials is not None else None
        self._stream_port = stream_port if sockets else None
        self._http2 = http2 and sockets
        self._no_channel: dict[str, float] = {}  # broker address -> until when (monotonic)
        self._grpc_only: set[TopicPartition] = set()  # partitions whose HTTP/2 stream ended

    def ensure(self, tp: TopicPartition, offset: int) -> None:
        """A stream of ``tp`` continuing at ``offset`` (a new one if the old went elsewhere)."""
        stream = self.streams.get(tp)
        if stream is not None and stream.next_offset == offset and not stream.closed:
            return
        if stream is not None:
            stream.close()
            del self.streams[tp]
        address = self._route(tp)
        self.streams[tp] = self._open(tp, offset, address)

    def _open(self, tp: TopicPartition, offset: int, address: str) -> Stream | SocketReader:
        hostport = split_address(address)
        if hostport is not None and self._stream_port is not None \
                and self._no_channel.get(address, 0.0) <= time.monotonic():
            port = self._stream_port(address, False)
            if port:
                host = f"[{hostport[0]}]" if ":" in hostport[0] else hostport[0]
                return ChannelStream(f"{host}:{port}", tp, offset, self._isolation, self._max_bytes,
                                     self.queue, self._token, broker_address=address)
        if hostport is not None and self._http2 and tp not in self._grpc_only:
            from logstore.client.frames.socket_stream import SocketStream

            return SocketStream(address, tp, offset, self._isolation, self._max_bytes, self.queue,
                                self._token)
        method = self._methods.get(address)
        if method is None:
            method = self._methods[address] = self._channels.channel(address).unary_stream(
                SUBSCRIBE,
                request_serializer=records_pb2.SubscribeRequest.SerializeToString,
                response_deserializer=_identity,
            )
        return Stream(method, tp, offset, self._isolation, self._max_bytes, self.queue, address)

    def ended(self, stream: Stream | SocketReader, item: Ended) -> LogstoreError | None:
        """``stream`` handed over ``item``: its transport cannot carry it. Drops it and says how
        to go on: None to open it again at once (another transport, or the data channel's new
        port), or an error to treat as the stream's (no broker answered: back off and retry)."""
        if self.streams.get(stream.tp) is stream:
            self.drop(stream.tp)
        if not isinstance(stream, ChannelStream):
            self._grpc_only.add(stream.tp)
            return None
        port = self._stream_port(stream.broker_address, True) if self._stream_port is not None else 0
        if port is None:
            return UnavailableError(f"cannot reach the broker at {stream.broker_address}: {item.reason}")
        if port == stream.port or not port:
            self._no_channel[stream.broker_address] = time.monotonic() + NO_CHANNEL_S
        return None

    def is_current(self, stream: Stream | SocketReader) -> bool:
        return self.streams.get(stream.tp) is stream and not stream.closed

    def drop(self, tp: TopicPartition) -> None:
        stream = self.streams.pop(tp, None)
        if stream is not None:
            stream.close()

    def retain(self, partitions: set[TopicPartition]) -> None:
        for tp in list(self.streams):
            if tp not in partitions:
                self.drop(tp)

    def close(self) -> None:
        for tp in list(self.streams):
            self.drop(tp)
        while True:  # a reader blocked on a full queue puts its message and sees it is closed
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
