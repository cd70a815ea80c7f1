"""One ``Subscribe`` call read straight off its own TCP socket: one copy per message, not three.

grpcio's Python receive path copies every message twice after the kernel has copied it into
gRPC's read slices: each slice into a ``bytes`` object, then all of them joined into one. While a
range is read, those two ``memmove`` were ~40 % of the client's CPU and the kernel's copy ~17 %
(perf, 100 B records). A table keeps every message, so each copy also writes memory that is not
in the CPU cache. This module opens its own HTTP/2 connection (cleartext, "prior knowledge", as
gRPC does) for one Subscribe call and reads each DATA frame's payload with ``recv_into`` straight
into the buffer that becomes the message (``np.empty``: not zeroed), so the kernel's copy is the
only one; ``wire.decode_subscribe_response`` then views that buffer as before.

Bytes on the wire (RFC 9113 section 4.1; gRPC's length-prefixed messages)::

    frame      length u24 | type u8 | flags u8 | R + stream id u31 | payload[length]   big-endian
    DATA       [pad length u8 if PADDED] gRPC bytes [padding]
    gRPC bytes compressed u8 (always 0 here) | length u32 | message[length] | ... across frames

What it leaves to gRPC: TLS (a client with ``tls_ca``/``tls_cert`` reads through gRPC) and the
meaning of headers. Response headers and trailers are skipped, never decoded (the request's are
sent as HPACK literals without indexing, so neither side's dynamic table is ever needed). A
stream that ends, is reset or whose connection fails before ``close`` is reported once as
``Ended``, and the caller re-opens that partition through gRPC from where it stood (``fetch``),
which raises the typed error (an unknown topic, an offset out of range, a refused token, a
broker that is not the leader) or carries on.

Flow control: the stream and the connection get ``WINDOW_BYTES`` of credit, renewed as frames
are read, so when the reader blocks on the caller's full queue the broker stops after at most
that many bytes (its memory stays bounded as with gRPC's own window).

Threading: each stream has one reader thread, which alone touches its socket's receive side;
``close`` (any thread) sets ``closed`` and shuts the socket down, which wakes the reader.
"""

from __future__ import annotations

import socket
import struct
from typing import cast

import numpy as np

from logstore.client import wire
from logstore.client.socket_reader import Closed, SocketReader, recv_exact

SUBSCRIBE_PATH = "/logstore.api.v1.LogStore/Subscribe"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types and flags (RFC 9113 section 6)
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 2, 4, 5
FRAME_HEADER_BYTES = 9
GRPC_PREFIX_BYTES = 5
DEFAULT_WINDOW_BYTES = 65_535
MAX_FRAME_BYTES = (1 << 24) - 1
STREAM_ID = 1

#: Credit the broker may send ahead of what the reader has read (stream and connection): one
#: message of the broker's default ``max_subscribe_bytes``, renewed every quarter of it (64 MiB
#: and 256 MiB read no faster, and would let a stalled reader leave more with the broker).
WINDOW_BYTES = 16 << 20
def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def _hpack_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 section 5.1."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """A header field as a literal without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    name_bytes, value_bytes = name.encode(), value.encode()
    return (b"\x00" + _hpack_integer(len(name_bytes), 7) + name_bytes
            + _hpack_integer(len(value_bytes), 7) + value_bytes)


def request_bytes(authority: str, request: bytes, token: str | None) -> bytes:
    """Everything the client sends first: preface, settings, window, headers, the request."""
    settings = b"".join(struct.pack(">HI", key, value) for key, value in (
        (SETTINGS_ENABLE_PUSH, 0), (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_BYTES),
        (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_BYTES)))
    fields = [(":method", "POST"), (":scheme", "http"), (":path", SUBSCRIBE_PATH),
              (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
    if token:
        fields.append(("authorization", f"Bearer {token}"))
    message = struct.pack(">BI", 0, len(request)) + request
    return (PREFACE + _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW_BYTES - DEFAULT_WINDOW_BYTES))
            + _frame(HEADERS, END_HEADERS, STREAM_ID, b"".join(_literal(*f) for f in fields))
            + _frame(DATA, END_STREAM, STREAM_ID, message))


class SocketStream(SocketReader):
    """One partition's subscription from ``offset`` on, as an HTTP/2 call to the broker's gRPC
    port at ``address``; puts ``(self, FetchedPartition | Ended)`` into ``out``."""

    def _first_bytes(self) -> bytes:
        """What is sent once connected (the request and all it needs)."""
        return request_bytes(self.server, self._request, self._token)

    def _read(self, sock: socket.socket) -> None:
        """Frames until the stream ends; each whole gRPC message decoded and handed over."""
        head = bytearray(FRAME_HEADER_BYTES)
        head_view = memoryview(head)
        prefix = bytearray(GRPC_PREFIX_BYTES)
        prefix_view = memoryview(prefix)
        prefix_got = 0
        message: np.ndarray | None = None
        message_view = memoryview(b"")
        message_got = 0
        credit = 0
        tp = self.tp
        while not self.closed:
            recv_exact(sock, head_view)
            length = int.from_bytes(head_view[0:3], "big")
            kind, flags = head[3], head[4]
            if kind != DATA:
                payload = bytearray(length)
                recv_exact(sock, memoryview(payload))
                if kind == SETTINGS and not flags & ACK:
                    sock.sendall(_frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    sock.sendall(_frame(PING, ACK, 0, bytes(payload)))
                elif kind == HEADERS and flags & END_STREAM:
                    raise Closed("the broker ended the subscription")
                elif kind == RST_STREAM:
                    raise Closed("the broker reset the subscription")
                elif kind == GOAWAY:
                    raise Closed("the broker closed the connection")
                continue
            left = length
            padding = 0
            if flags & PADDED:
                recv_exact(sock, head_view[:1])
                padding = head[0]
                left -= 1 + padding
            while left > 0:
                if message is None:
                    take = min(GRPC_PREFIX_BYTES - prefix_got, left)
                    recv_exact(sock, prefix_view[prefix_got : prefix_got + take])
                    prefix_got += take
                    left -= take
                    if prefix_got == GRPC_PREFIX_BYTES:
                        if prefix[0]:
                            raise Closed("a compressed gRPC message")
                        message = np.empty(int.from_bytes(prefix_view[1:5], "big"), np.uint8)
                        message_view, message_got, prefix_got = message.data, 0, 0
                else:
                    take = min(len(message_view) - message_got, left)
                    recv_exact(sock, message_view[message_got : message_got + take])
                    message_got += take
                    left -= take
                if message is not None and message_got == len(message_view):
                    fetched, _start = wire.decode_subscribe_response(
                        cast(bytes, message_view), tp.topic, tp.partition)  # it views any buffer
                    message = None
                    if not self._put(fetched):
                        return
            if padding:
                recv_exact(sock, memoryview(bytearray(padding)))
            credit += length
            if credit >= WINDOW_BYTES // 4:
                update = struct.pack(">I", credit)
                sock.sendall(_frame(WINDOW_UPDATE, 0, 0, update)
                             + _frame(WINDOW_UPDATE, 0, STREAM_ID, update))
                credit = 0
            if flags & END_STREAM:
                raise Closed("the broker ended the subscription")
