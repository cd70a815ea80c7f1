"""The replica data channel: a follower's ReplicaFetch over plain TCP (or TLS), without gRPC's
copies of each megabyte message. The leader listens on its replica port (advertised in its etcd
registration as ``replica_address``); this module holds the frames both ends speak and the
follower's end. Only the transport differs from the gRPC ReplicaFetch: the same request, the same
answer, the same long poll.

Frames, integers little-endian::

    hello     [u32 length][JSON {"broker_id": N, "token": "..."}]          follower -> leader
    welcome   [u32 length][JSON {"ok": true}  or  {"reason": R, "message": M}] leader -> follower
    request   [u32 length][ReplicaFetchRequest]                              follower -> leader
    response  [u32 length][ReplicaFetchResponse, every ``records`` left out]
              [u32 records length, one per partition of the response, in its order]
              [the partitions' records, back to back]                        leader -> follower

One request is answered before the next is sent. The leader writes a response with one
``sendmsg`` of its segment's memoryviews (no user-space copy); the follower reads it into one
reusable buffer (``recv_into``) and hands views of it to ``append_replica``. A refused hello
(a bad token, no replica right) is answered with its reason and the connection closed; any other
error closes the connection, and the follower connects again with its fetcher's backoff.

TLS (the broker has a certificate): both ends use the ``ssl`` module through asyncio streams, so
the bytes are copied once by the encryption anyway; without TLS both ends use the raw socket.

Threading: event loop thread only; a channel serves one fetcher, one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from typing import Any

from logstore.api.v1 import cluster_pb2
from logstore.cluster.replica_wire import ReplicaFetched

U32 = struct.Struct("<I")
#: The largest hello, welcome or request frame (a request names partitions: a few KiB).
MAX_CONTROL_FRAME_BYTES = 4 << 20
#: Buffers per ``sendmsg`` (Linux takes at most IOV_MAX = 1024).
MAX_IOVECS = 512
#: The largest response frame accepted (the leader caps one at max_bytes plus one batch).
MAX_RESPONSE_BYTES = 1 << 30


class ReplicaChannelError(ConnectionError):
    """The replica channel broke or the other end broke its protocol; close and reconnect."""


class ReplicaChannelRefused(ReplicaChannelError):
    """The leader refused this follower's hello (``reason``: NOT_AUTHENTICATED, NOT_AUTHORIZED...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Connection:
    """One end of a channel: pieces written without joining them (plain TCP: ``sendmsg``),
    frames read into caller's buffers."""

    def __init__(self, sock: socket.socket | None = None, reader: asyncio.StreamReader | None = None,
                 writer: asyncio.StreamWriter | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._reader = reader
        self._writer = writer
        if sock is not None:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send(self, pieces: list[Any]) -> None:
        if self._writer is not None:
            for piece in pieces:
                self._writer.write(piece)
            await self._writer.drain()
            return
        assert self._sock is not None
        views = [memoryview(p).cast("B") for p in pieces if len(p)]
        while views:
            batch = views[:MAX_IOVECS]
            try:
                sent = self._sock.sendmsg(batch)
            except BlockingIOError:
                sent = 0
            full = sent < sum(len(v) for v in batch)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if views and full:  # the socket buffer is full: this piece as the socket drains
                views[0] = views[0][sent:]
                await self._loop.sock_sendall(self._sock, views.pop(0))

    async def read_into(self, view: memoryview) -> None:
        """Fill ``view`` exactly; ReplicaChannelError if the other end closes first."""
        if self._reader is not None:
            try:
                view[:] = await self._reader.readexactly(len(view))
            except asyncio.IncompleteReadError:
                raise ReplicaChannelError("the replica channel was closed") from None
            return
        sock = self._sock
        assert sock is not None
        got = 0
        while got < len(view):
            try:  # what is there already, without a coroutine and a trip through the event loop
                count = sock.recv_into(view[got:])
            except BlockingIOError:
                count = await self._loop.sock_recv_into(sock, view[got:])
            if not count:
                raise ReplicaChannelError("the replica channel was closed")
            got += count

    async def read_frame(self, limit: int = MAX_CONTROL_FRAME_BYTES) -> bytes:
        """One ``[u32 length][bytes]`` frame."""
        head = bytearray(4)
        await self.read_into(memoryview(head))
        (length,) = U32.unpack(head)
        if length > limit:
            raise ReplicaChannelError(f"a {length}-byte frame is past the {limit}-byte limit")
        body = bytearray(length)
        await self.read_into(memoryview(body))
        return bytes(body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self._sock is not None:
            self._sock.close()


def frame(body: bytes) -> list[bytes]:
    return [U32.pack(len(body)), body]


def response_pieces(partitions: list[tuple[cluster_pb2.ReplicaFetchedPartition, Any]]) -> list[Any]:
    """A response frame from each partition's small fields (records unset) and records."""
    header = cluster_pb2.ReplicaFetchResponse(partitions=[small for small, _ in partitions]).SerializeToString()
    lengths = struct.pack(f"<{len(partitions)}I", *(len(records) for _, records in partitions))
    return [U32.pack(len(header)), header, lengths, *(records for _, records in partitions)]


class ReplicaChannel:
    """A follower's connection to one leader's replica port."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._buffer = bytearray(1 << 20)

    @classmethod
    async def connect(cls, address: str, *, broker_id: int, token: str, ssl_context: ssl.SSLContext | None,
                      timeout_s: float) -> ReplicaChannel:
        """Connect and say hello; ReplicaChannelRefused if the leader refuses this broker."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        async with asyncio.timeout(timeout_s):
            if ssl_context is not None:
                reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_context)
                connection = Connection(reader=reader, writer=writer)
            else:
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
                except BaseException:
                    sock.close()
                    raise
                connection = Connection(sock)
            try:
                await connection.send(frame(json.dumps({"broker_id": broker_id, "token": token}).encode()))
                welcome = json.loads(await connection.read_frame())
            except BaseException:
                connection.close()
                raise
        if not welcome.get("ok"):
            connection.close()
            raise ReplicaChannelRefused(str(welcome.get("reason", "")), str(welcome.get("message", "")))
        return cls(connection)

    async def fetch(self, request: cluster_pb2.ReplicaFetchRequest) -> list[ReplicaFetched]:
        """One fetch; the records are views of this channel's buffer, valid until the next fetch."""
        connection = self._connection
        await connection.send(frame(request.SerializeToString()))
        header = cluster_pb2.ReplicaFetchResponse.FromString(await connection.read_frame())
        count = len(header.partitions)
        lengths_bytes = bytearray(4 * count)
        await connection.read_into(memoryview(lengths_bytes))
        lengths = struct.unpack(f"<{count}I", lengths_bytes)
        total = sum(lengths)
        if total > MAX_RESPONSE_BYTES:
            raise ReplicaChannelError(f"a {total}-byte response is past the {MAX_RESPONSE_BYTES}-byte limit")
        if total > len(self._buffer):  # views of the old buffer may live on: a new one
            self._buffer = bytearray(total)
        view = memoryview(self._buffer)[:total]
        await connection.read_into(view)
        fetched = []
        position = 0
        for small, length in zip(header.partitions, lengths, strict=True):
            fetched.append(ReplicaFetched(small, view[position : position + length]))
            position += length
        return fetched

    def close(self) -> None:
        self._connection.close()
