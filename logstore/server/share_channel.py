"""A share group member's ``ShareStream`` over the broker's stream port (``stream_listener``):
the same requests, answers and order as the gRPC call, without grpcio on either end.

Through gRPC each poll of a ``ShareConsumer`` cost a few hundred microseconds of grpcio's
machinery on each side (its threads, HTTP/2 framing, the copies of a 100 KB answer) beside the
broker's own work; here a request is one ``sendmsg`` by the client and one read by the broker,
and an answer the reverse. Frames, integers little-endian, after the hello (whose ``"call"`` is
``"share"``)::

    request   [u32 length][ShareFetchRequest]                 client -> broker, repeated
    response  [u32 length][u8 0][ShareFetchResponse]          broker -> client, one a request
    refusal   [u32 length][u8 1][JSON {"reason", "message", "metadata"}]   last, then closed

Requests are served one after another and answered in request order, exactly as the gRPC
``ShareStream`` serves them (``ShareServiceMixin.share_stream_answers``): a request that fails
is answered with ``error`` set and the channel stays open; requests are read ahead of the one
served, and one that carries acknowledgements ends the waits of those before it. A
request longer than ``max_request_bytes`` is refused (``LIMIT_EXCEEDED``) unread and the
connection closed. The client ends the stream by closing its side; requests it sent and that
were not answered yet are dropped with the connection (their acquisitions come back after their
lock, as when a gRPC call breaks).

Threading: event loop thread only.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from logstore.cluster.replica_channel import Connection, ReplicaChannelError
from logstore.errors import LimitExceededError

U32 = struct.Struct("<I")
METHOD = "ShareChannel"


async def serve_share(service: Any, connection: Connection,
                      send_response: Callable[[bytes], Awaitable[None]]) -> None:
    """Answer the requests of one share channel until the client ends it. ``send_response``
    writes one response frame; raises what refuses the channel."""
    limit = service.broker.config.max_request_bytes

    async def next_raw() -> bytes | None:
        head = bytearray(U32.size)
        try:
            await connection.read_into(memoryview(head))
        except ReplicaChannelError:
            return None  # the client ended the stream (or went away: nothing to answer)
        (length,) = U32.unpack(head)
        if length > limit:
            raise LimitExceededError(
                f"a {length}-byte share request is past the {limit}-byte limit (max_request_bytes)",
                limit_name="max_request_bytes", limit=limit,
            )
        body = bytearray(length)
        await connection.read_into(memoryview(body))  # (cut in the middle: the client is gone)
        return bytes(body)

    async for response in service.share_stream_answers(next_raw):
        await send_response(response.SerializeToString())
