"""One share stream of a ``ShareConsumer`` over the broker's stream port
(``server/share_channel.py`` describes the frames): the ``ShareStream`` call's requests and
answers, in order, without grpcio — no gRPC threads, no HTTP/2, the request written and the
answer read in the caller's own thread.

``ShareChannel`` has ``ShareStream``'s interface (``send``, ``receive``, ``in_flight``,
``broken``, ``close``), so the consumer drives either the same way (pipelining with
``prefetch`` included). ``open`` connects to the port the broker advertises
(``Metadata.stream_port``) and says hello (``{"call": "share"}`` and the token); it gives None
when the port cannot be reached within ``CONNECT_TIMEOUT_S`` (the consumer then uses gRPC). A
request that fails as a whole comes back with ``error`` set (raised here as its typed error) and
the channel stays usable; a refusal of the channel itself (a refused token, a request past
``max_request_bytes``) raises its typed error and ends it; a connection that breaks or ends
raises ``UnavailableError`` and the channel is dead (``answered`` tells whether it ever
answered: one that never did may not be a broker's channel at all; the consumer then leaves
the port out for a while).

Threading: one thread at a time (the consumer's ``poll``/``commit``/``close``).
"""

from __future__ import annotations

import itertools
import socket

from logstore.api.v1 import share_pb2
from logstore.client.channel_stream import (
    CONNECT_TIMEOUT_S,
    HEAD,
    MESSAGE,
    REFUSAL,
    U32,
    greet,
    refusal_error,
)
from logstore.client.share_stream import answer_of_oldest
from logstore.client.socket_reader import Closed, recv_exact, split_address
from logstore.errors import UnavailableError

#: Share streams over the stream port where the broker has one (False: always gRPC; A/B runs).
CHANNEL_SHARE = True
#: The largest answer accepted (a fetch answers at most the broker's max_fetch_bytes).
MAX_RESPONSE_BYTES = 1 << 30


class ShareChannel:
    def __init__(self, sock: socket.socket, server: str) -> None:
        self._sock = sock
        self._server = server
        self._ids = itertools.count(1)
        self._failure: OSError | None = None
        #: The requests sent and not answered yet, oldest first.
        self.in_flight: list[share_pb2.ShareFetchRequest] = []
        self.broken = False
        #: Answers received so far.
        self.answered = 0

    @classmethod
    def open(cls, address: str, port: int, token: str | None, server: str) -> ShareChannel | None:
        """A channel to ``port`` on the host of ``address``; None when it cannot be reached."""
        hostport = split_address(address)
        if hostport is None:
            return None
        try:
            sock = socket.create_connection((hostport[0], port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            return None
        try:
            greet(sock, token, "share")
        except OSError:
            sock.close()
            return None
        return cls(sock, server)

    def send(self, request: share_pb2.ShareFetchRequest) -> None:
        request.correlation_id = next(self._ids)
        self.in_flight.append(request)
        if self._failure is not None:
            return
        payload = request.SerializeToString()
        try:
            self._sock.sendall(U32.pack(len(payload)) + payload)  # (small: a fetch and its ack ranges)
        except OSError as exc:
            self._failure = exc  # raised by the next receive, as a broken call's

    def receive(self) -> share_pb2.ShareFetchResponse:
        """The answer to the oldest request in flight (its error raised). When the channel
        fails, ``in_flight`` still holds every request not answered (the oldest included)."""
        try:
            if self._failure is not None:
                raise self._failure
            head = bytearray(HEAD.size)
            recv_exact(self._sock, memoryview(head))
            length, kind = HEAD.unpack(head)
            if length > MAX_RESPONSE_BYTES or kind not in (MESSAGE, REFUSAL):
                raise Closed(f"a frame of kind {kind}, {length} bytes")
            body = bytearray(length)
            recv_exact(self._sock, memoryview(body))
        except (OSError, Closed) as exc:
            self.close()
            raise UnavailableError(f"cannot reach the broker at {self._server}: its share channel "
                                   f"broke ({exc})") from None
        if kind == REFUSAL:
            self.close()
            raise refusal_error(body) or UnavailableError(
                f"the share channel at {self._server} sent a malformed refusal")
        self.answered += 1
        return answer_of_oldest(self, share_pb2.ShareFetchResponse.FromString(bytes(body)), "the share channel")

    def close(self) -> None:
        """End the stream (requests not answered are dropped)."""
        if not self.broken:
            self.broken = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
