"""A Subscribe stream read by a thread straight off its own TCP socket: what the broker's data
channel (``channel_stream``) and an HTTP/2 call to the gRPC port (``frames.socket_stream``)
share. Each reads every message with ``recv_into`` straight into the buffer that becomes it, so
the kernel's copy out of the socket is the client's only one (grpcio's Python receive makes two
more: each read slice into a ``bytes``, then all of them joined into one).

A reader puts ``(self, item)`` into its ``out`` queue as ``subscription.Stream`` does: each
message as a ``wire.FetchedPartition``, and once, when it stops before ``close``, either a
typed ``LogstoreError`` (what the broker refused, or a broken connection: ``UnavailableError``)
or ``Ended``, which says this transport cannot serve the stream and the caller should read it
another way (``Subscriptions.ended``).

Threading: each reader has one thread, which alone touches its socket's receive side; ``close``
(any thread) sets ``closed`` and shuts the socket down, which wakes the reader.
"""

from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any

from logstore.api.v1 import records_pb2
from logstore.client.models import TopicPartition
from logstore.errors import LogstoreError

#: ``recv_into`` waits in the kernel for the whole part asked for, copying as data arrives,
#: instead of returning each chunk to a Python loop (~4 % less client CPU). A receive low-water
#: mark (``SO_RCVLOWAT``) was tried too and is not set: the kernel then wakes the reader only
#: once that many bytes wait, which never happens at the end of a range.
RECV_FLAGS = getattr(socket, "MSG_WAITALL", 0)
#: How long ``close`` lets a reader blocked on a full queue take to notice.
PUT_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Ended:
    """The stream stopped before it was closed, and this transport cannot carry it on (not
    reachable, reset, ended, refused...): read it another way."""

    reason: str


class Closed(Exception):
    """The socket ran dry or was shut down."""


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``; None for any other target form
    (``unix:``, ``dns:///``...), which stays with gRPC."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    elif ":" in host:
        return None
    return host, int(port)


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    got, size = 0, len(view)
    while got < size:
        count = sock.recv_into(view[got:], size - got, RECV_FLAGS)
        if count == 0:
            raise Closed("the connection closed")
        got += count


class SocketReader:
    """One partition's subscription from ``offset`` on, over its own connection to ``address``
    (``host:port``). Subclasses say what to send first and how to read what comes back."""

    def __init__(self, address: str, tp: TopicPartition, offset: int, isolation: int,
                 max_bytes: int, out: Any, token: str | None = None,
                 connect_timeout_s: float = 10.0, server: str = "") -> None:
        self.tp = tp
        #: Where it connects.
        self.address = address
        #: The broker it reads from, by its gRPC address (as ``subscription.Stream.server``:
        #: what failures are reported against).
        self.server = server or address
        self.next_offset = offset
        self.closed = False
        self._out = out
        self._token = token
        self._connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # guards _sock against close() while connecting
        self._request = records_pb2.SubscribeRequest(
            topic=tp.topic, partition=tp.partition, start=records_pb2.START_OFFSET,
            offset=offset, max_bytes=max_bytes, isolation_level=isolation,  # type: ignore[arg-type]
        ).SerializeToString()
        self._thread = threading.Thread(
            target=self._run, name=f"logstore-socket-{tp.topic}-{tp.partition}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closed = True
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _put(self, item: Any) -> bool:
        """Hand ``item`` over unless closed first (never blocks past ``close``)."""
        while not self.closed:
            try:
                self._out.put((self, item), timeout=PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _first_bytes(self) -> bytes:
        """What is sent once connected (the request and all it needs)."""
        raise NotImplementedError

    def _read(self, sock: socket.socket) -> None:
        """Messages until the stream ends (raises when it does)."""
        raise NotImplementedError

    def _failure(self, error: Exception, connected: bool) -> Ended | LogstoreError:
        """What to hand over when the stream stopped with ``error``."""
        return Ended(str(error) or type(error).__name__)

    def _run(self) -> None:
        outcome: Ended | LogstoreError = Ended("the broker ended the subscription")
        connected = False
        try:
            hostport = split_address(self.address)
            if hostport is None:
                raise Closed(f"not a host:port address: {self.address!r}")
            sock = socket.create_connection(hostport, timeout=self._connect_timeout_s)
            with self._lock:
                self._sock = sock
                closed = self.closed
            if closed:
                return
            connected = True
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(self._first_bytes())
            self._read(sock)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
            outcome = self._failure(exc, connected)
        finally:
            with self._lock:
                sock_, self._sock = self._sock, None
            if sock_ is not None:
                sock_.close()
        if not self.closed:
            self._put(outcome)
