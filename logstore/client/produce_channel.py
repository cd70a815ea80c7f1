"""A producer's ``ProduceStream`` over the broker's stream port (``server/produce_channel.py``
describes the frames): each serialized request written with one ``sendmsg``, no grpcio copy on
either end.

``ChannelMethod`` stands in for grpcio's stream-stream method in ``stream.ProduceStream``:
called with the request iterator it connects, says hello (``{"call": "produce"}`` and the
token) and returns a ``ChannelCall``, which a writer thread feeds from the iterator and whose
responses the caller iterates; when the iterator ends, the writer shuts the socket's sending
side, and the broker closes the channel once it has answered. A broken or closed connection
raises ``UnavailableError`` from the iteration (``ProduceStream`` then reopens and resends what
is pending, as after UNAVAILABLE through gRPC); a refusal (a refused token, a request over
``max_request_bytes``) raises its typed error. A stream port that cannot be connected to, or
whose connection breaks before its first answer (another service listening there, a broker
going down), is left out for ``NO_CHANNEL_S`` and the calls go through gRPC meanwhile.

Threading: a call's writer thread alone sends; the caller's thread (``ProduceStream``'s reader)
alone receives; ``cancel`` (any thread) shuts the socket down.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from logstore.api.v1 import records_pb2
from logstore.client.channel_stream import (
    CONNECT_TIMEOUT_S,
    HEAD,
    MESSAGE,
    REFUSAL,
    U32,
    greet,
    refusal_error,
)
from logstore.client.socket_reader import Closed, recv_exact, split_address
from logstore.errors import UnavailableError

#: Produce over the stream port where the broker has one (False: always gRPC; the A/B rows).
CHANNEL_PRODUCE = True
#: How long a broker's stream port is left out after it could not be used.
NO_CHANNEL_S = 30.0
MAX_RESPONSE_BYTES = 64 << 20


class ChannelCall:
    """One produce stream on its own connection: iterate it for the responses."""

    def __init__(self, sock: socket.socket, requests: Iterator[bytes], server: str,
                 on_unanswered: Callable[[], None] = lambda: None) -> None:
        self._sock = sock
        self._server = server
        self._answers = 0
        #: Called when the channel breaks before its first answer (not this protocol, perhaps).
        self._on_unanswered = on_unanswered
        self._writer = threading.Thread(target=self._write, args=(requests,),
                                        name="logstore-produce-channel", daemon=True)
        self._writer.start()

    def _write(self, requests: Iterator[bytes]) -> None:
        sock = self._sock
        try:
            for payload in requests:
                views = [memoryview(U32.pack(len(payload))), memoryview(payload).cast("B")]
                while views:
                    sent = sock.sendmsg(views)
                    while views and sent >= len(views[0]):
                        sent -= len(views.pop(0))
                    if views and sent:
                        views[0] = views[0][sent:]
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the connection broke: the reader sees it and the stream reopens

    def __iter__(self) -> ChannelCall:
        return self

    def __next__(self) -> records_pb2.ProduceResponse:
        head = bytearray(HEAD.size)
        try:
            got = self._sock.recv_into(head, HEAD.size, socket.MSG_WAITALL)
            if got == 0:
                raise StopIteration  # the broker ended it, every request answered
            if got < HEAD.size:
                recv_exact(self._sock, memoryview(head)[got:])
            length, kind = HEAD.unpack(head)
            if length > MAX_RESPONSE_BYTES:
                raise UnavailableError(f"the data channel at {self._server} sent a {length}-byte frame")
            body = bytearray(length)
            recv_exact(self._sock, memoryview(body))
            if kind not in (MESSAGE, REFUSAL):
                raise Closed(f"a frame of kind {kind}")
        except (OSError, Closed, UnavailableError) as exc:
            if not self._answers:
                self._on_unanswered()
            raise UnavailableError(f"cannot reach the broker at {self._server}: its data channel "
                                   f"broke ({exc})") from None
        if kind == MESSAGE:
            self._answers += 1
            return records_pb2.ProduceResponse.FromString(bytes(body))
        raise refusal_error(body) or UnavailableError(
            f"the data channel at {self._server} sent a malformed refusal")

    def cancel(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ChannelMethod:
    """Called like grpcio's ``stream_stream`` method: a ``ChannelCall`` to the stream port the
    broker at ``address`` advertises, or the gRPC call when there is none or it cannot be
    reached (``stream_port(address, fresh)``: 0 none, None no broker answered)."""

    def __init__(self, address: str, grpc_method: Any, stream_port: Callable[[str, bool], int | None],
                 token: str | None) -> None:
        self._address = address
        self._grpc = grpc_method
        self._stream_port = stream_port
        self._token = token
        self._no_channel_until = 0.0
        self._fresh = False  # after the first call (a reopen follows a failure): ask the metadata again

    def __call__(self, requests: Iterator[bytes]) -> Any:
        hostport = split_address(self._address)
        port = None
        if hostport is not None and time.monotonic() >= self._no_channel_until:
            port = self._stream_port(self._address, self._fresh)
        if not port or hostport is None:
            return self._grpc(requests)
        try:
            sock = socket.create_connection((hostport[0], port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            self._no_channel_until = time.monotonic() + NO_CHANNEL_S
            self._fresh = True
            return self._grpc(requests)
        self._fresh = True  # a later call (a reconnect) checks the port first
        try:
            greet(sock, self._token, "produce")
        except OSError:
            sock.close()
            return self._grpc(requests)
        return ChannelCall(sock, requests, self._address, self._unanswered)

    def _unanswered(self) -> None:
        """A channel broke before answering anything: gRPC for a while (the port may be some
        other service's, or the broker is restarting: either way gRPC says which)."""
        self._no_channel_until = time.monotonic() + NO_CHANNEL_S
