"""One ``Subscribe`` stream read off the broker's Subscribe data channel (its stream port): no
HTTP/2, no gRPC, and no user-space copy on either end.

The broker writes each message from its segment's memoryviews with one ``sendmsg``
(``logstore.server.stream_listener``, which documents the frames); this end reads each message
with ``recv_into`` straight into the buffer that becomes it (``np.empty``: not zeroed,
``socket_reader``), and ``wire.decode_subscribe_response`` views that buffer. Frames, integers
little-endian::

    hello     [u32 length][JSON {"token": "..."}]                       client -> broker
    request   [u32 length][SubscribeRequest]                            client -> broker
    message   [u32 length][u8 0][SubscribeResponse]                     broker -> client, repeated
    refusal   [u32 length][u8 1][JSON {"reason": R, "message": M,       broker -> client, last
                                       "metadata": {...}}]

What it hands over when it stops before ``close``: a refusal as its typed error (exactly the
error the gRPC ``Subscribe`` raises: an unknown topic, an offset out of range, a refused token,
not the leader...); a connection that breaks or ends after messages came as ``UnavailableError``
(the broker went down or is restarting: retried with the caller's backoff); and ``Ended`` when
the port does not answer, closes before any message or does not speak this protocol
(``Subscriptions.ended`` asks the metadata again and decides what next). Flow control is TCP's: when the reader blocks on the caller's full queue, the socket
buffers fill and the broker's send waits. ``close`` shuts the socket down, which the broker
sees as the end of the stream.

Threading: as ``socket_reader.SocketReader``.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, cast

import numpy as np

from logstore.client import wire
from logstore.client.channel import make_error
from logstore.client.models import TopicPartition
from logstore.client.socket_reader import Closed, Ended, SocketReader, recv_exact
from logstore.errors import LogstoreError, UnavailableError

U32 = struct.Struct("<I")
#: A broker frame's head: the body's length, then its kind.
HEAD = struct.Struct("<IB")
MESSAGE, REFUSAL = 0, 1
#: A stream port that does not answer this fast is taken as out of reach (a firewall that drops
#: packets): the stream is read another way.
CONNECT_TIMEOUT_S = 2.0
#: The largest refusal accepted.
MAX_REFUSAL_BYTES = 1 << 16
#: The largest message accepted (the broker caps one at its max_subscribe_bytes plus one batch):
#: anything longer is not a broker speaking this protocol.
MAX_MESSAGE_BYTES = 1 << 30


def greet(sock: socket.socket, token: str | None, call: str) -> None:
    """Ready ``sock``, just connected to a stream port, for a ``call`` stream (``"produce"``,
    ``"share"``): blocking, no Nagle delay, its hello sent. Raises the socket's OSError."""
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = json.dumps({"token": token or "", "call": call}).encode()
    sock.sendall(U32.pack(len(hello)) + hello)


def refusal_error(body: bytes | bytearray) -> LogstoreError | None:
    """A refusal frame's body as the typed error it names; None when it is not one."""
    try:
        refusal = json.loads(body)
        return make_error(str(refusal["reason"]), str(refusal["message"]),
                          {str(k): str(v) for k, v in dict(refusal.get("metadata") or {}).items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _Refused(Exception):
    def __init__(self, error: LogstoreError) -> None:
        super().__init__(error.message)
        self.error = error


class _NotTheProtocol(Exception):
    """What came back is not this protocol."""


class ChannelStream(SocketReader):
    """One partition's subscription from ``offset`` on, over the broker's stream port at
    ``address`` (``host:port``), standing in for the gRPC stream to ``broker_address``."""

    def __init__(self, address: str, tp: TopicPartition, offset: int, isolation: int, max_bytes: int,
                 out: Any, token: str | None = None, *, broker_address: str = "",
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        #: The broker's gRPC address this stream stands in for (also ``server``).
        self.broker_address = broker_address or address
        #: The stream port it connects to.
        self.port = int(address.rpartition(":")[2])
        self._messages = 0  # read so far: a channel that served some and broke was working
        super().__init__(address, tp, offset, isolation, max_bytes, out, token, connect_timeout_s,
                         server=self.broker_address)

    def _first_bytes(self) -> bytes:
        hello = json.dumps({"token": self._token or ""}).encode()
        return U32.pack(len(hello)) + hello + U32.pack(len(self._request)) + self._request

    def _failure(self, error: Exception, connected: bool) -> Ended | LogstoreError:
        if isinstance(error, _Refused):
            return error.error
        if connected and self._messages and isinstance(error, (Closed, ConnectionError)):
            return UnavailableError(
                f"cannot reach the broker at {self.broker_address}: its data channel closed ({error})")
        return Ended(f"the data channel at {self.address}: {error or type(error).__name__}")

    def _read(self, sock: socket.socket) -> None:
        head = bytearray(HEAD.size)
        head_view = memoryview(head)
        tp = self.tp
        while not self.closed:
            recv_exact(sock, head_view)
            length, kind = HEAD.unpack(head)
            if kind == REFUSAL and length <= MAX_REFUSAL_BYTES:
                body = bytearray(length)
                recv_exact(sock, memoryview(body))
                error = refusal_error(body)
                if error is None:
                    raise _NotTheProtocol(f"a malformed refusal: {bytes(body[:100])!r}")
                raise _Refused(error)
            if kind != MESSAGE:
                raise _NotTheProtocol(f"a frame of kind {kind}")
            if length > MAX_MESSAGE_BYTES:
                raise _NotTheProtocol(f"a {length}-byte message is past the {MAX_MESSAGE_BYTES}-byte limit")
            message = np.empty(length, np.uint8)
            recv_exact(sock, message.data)
            fetched, _start = wire.decode_subscribe_response(
                cast(bytes, message.data), tp.topic, tp.partition)  # it views any buffer
            self._messages += 1
            if not self._put(fetched):
                return
