"""A ``ProduceStream`` over the broker's stream port (``stream_listener``): the same requests,
answers and order as the gRPC call, without grpcio's copies of every request.

Through gRPC a produce request reached the broker's handler as one ``bytes`` that grpcio had
joined from its read slices (copies of what the kernel had copied), and the client's grpcio had
copied it into its slices before sending. Here the client writes each serialized request with
one ``sendmsg`` and the broker reads it with ``recv_into`` straight into a buffer of its own,
whose views the request's batches are (``wire.parse_produce_request``), so the kernel's copies
are the only ones before the append. Frames, integers little-endian, after the hello (whose
``"call"`` is ``"produce"``)::

    request   [u32 length][ProduceRequest]                    client -> broker, repeated
    response  [u32 length][u8 0][ProduceResponse]             broker -> client, one a request
    refusal   [u32 length][u8 1][JSON {"reason", "message", "metadata"}]   last, then closed

Requests are answered one after another in request order, each as the gRPC ``ProduceStream``
answers it (``LogStoreService._stream_request``: a request that fails is answered with ``error``
set and the channel stays open); while one is handled the next ones are already being read, as
long as ``max_queued_request_bytes`` has room (the same budget as gRPC's, so a client that sends
faster than the broker writes waits in TCP). A request longer than ``max_request_bytes`` is
refused (``LIMIT_EXCEEDED``) and the connection closed: it is not read. The client ends the
stream by shutting its side down once its requests are answered; the broker then closes.

Each buffer is a fresh allocation (``np.empty``: not zeroed) that the request's views keep alive
for as long as the broker holds them.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import numpy as np

from logstore.cluster.replica_channel import Connection, ReplicaChannelError
from logstore.errors import LimitExceededError

U32 = struct.Struct("<I")
METHOD = "ProduceChannel"


async def serve_produce(service: Any, connection: Connection, peer: str,
                        send_response: Any) -> None:
    """Answer the requests of one produce channel until the client ends it. ``send_response``
    (an awaitable of ``bytes``) writes one response frame; raises what refuses the channel."""
    queued = service.broker.backpressure.queued
    limit = service.broker.config.max_request_bytes
    requests: asyncio.Queue[tuple[Any, int] | None | BaseException] = asyncio.Queue()

    async def read() -> None:
        head = bytearray(U32.size)
        try:
            while True:
                await queued.wait_below()
                try:
                    await connection.read_into(memoryview(head))
                except ReplicaChannelError:
                    break  # the client ended the stream (or went away: nothing to answer)
                (length,) = U32.unpack(head)
                if length > limit:
                    raise LimitExceededError(
                        f"a {length}-byte produce request is past the {limit}-byte limit (max_request_bytes)",
                        limit_name="max_request_bytes", limit=limit,
                    )
                buffer = np.empty(length, np.uint8)
                await connection.read_into(buffer.data)
                await requests.put((buffer.data, queued.take(length)))
            await requests.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the answering loop, in order
            await requests.put(exc)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while True:
            item = await requests.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, ReplicaChannelError):
                    return  # cut in the middle of a request: the client is gone
                raise item
            raw, held = item
            response = await service._stream_request(raw, held, peer)
            await send_response(response.SerializeToString())
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        while not requests.empty():  # read and never handled: their room back
            left = requests.get_nowait()
            if isinstance(left, tuple):
                queued.release(left[1])
