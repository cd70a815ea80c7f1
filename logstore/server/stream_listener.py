"""The Subscribe data channel: one Subscribe stream over its own plain TCP connection, each
message written from the segment's memoryviews with ``sendmsg`` (no user-space copy).

Its readers are table reads (``Consumer.read_arrow``, ``iter_arrow``) and the Subscribe streams
of consumers that are not group members (``client/channel_stream.py``). Serving a table read
through gRPC, the broker's event loop spent ~40 % of its CPU in ``memmove``: the records joined into the serialized response,
then grpcio copying that ``bytes`` into its own slices (docs/frames.md). Here the only copy is
the kernel's, into the socket. What is answered is exactly what the gRPC ``Subscribe`` answers
(``LogStoreService.subscribe_messages``: the same read right, start, long poll and messages);
only the transport differs.

Frames, integers little-endian::

    hello     [u32 length][JSON {"token": "...", "call": "subscribe"}]  client -> broker
    request   [u32 length][SubscribeRequest]                            client -> broker
    message   [u32 length][u8 0][SubscribeResponse]                     broker -> client, repeated
    refusal   [u32 length][u8 1][JSON {"reason": R, "message": M,       broker -> client, last
                                       "metadata": {...}}]

(``length`` counts what follows the kind byte; ``"call"`` may be left out: ``"subscribe"``.
A hello whose ``"call"`` is ``"produce"`` opens a produce stream instead, the frames of which
``produce_channel`` describes; ``"share"`` a share group member's stream, ``share_channel``.) The client sends its hello and request at once
and then nothing more: any byte or the end of its side closes the stream (how a reader that is
done says so). The hello's token is authenticated like a gRPC call's bearer token. A refused
hello or request (a bad token, no read right, an unknown topic, an offset out of range, not the
leader) is answered with a refusal and the connection closed: the reason, message and fields
(``metadata``) of the error the gRPC ``Subscribe`` would have answered, so the client raises the
same typed error (``errors.py``'s table maps it to a status for gRPC; here it travels as it is). Flow control is TCP's: a reader that stops
reading fills the socket buffers and the broker's send waits.

There is no TLS here: a broker with a certificate does not open the channel (its clients read
through gRPC). Connections are not counted by ``max_subscriptions_per_connection`` (each carries
one stream); streams are counted in ``logstore_requests_total{method="SubscribeChannel"}`` when
they end (``code="OK"`` when the reader closed its side or the broker closed, the refusal's
reason when refused).

A response view of a segment stays valid while it is sent: segments keep their mapping for
readers (``storage.segment``).

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from typing import Any

from google.protobuf.message import DecodeError

from logstore.api.v1 import records_pb2
from logstore.cluster.replica_channel import Connection, ReplicaChannelError
from logstore.errors import InvalidRequestError, LogstoreError
from logstore.server.auth import SecurityConfig, principal_var
from logstore.server.errors import as_logstore_error
from logstore.server.produce_channel import METHOD as PRODUCE_METHOD
from logstore.server.produce_channel import serve_produce
from logstore.server.share_channel import METHOD as SHARE_METHOD
from logstore.server.share_channel import serve_share
from logstore.server.tcp_listener import TcpListener
from logstore.server.wire import subscribe_response_pieces

log = logging.getLogger(__name__)

METHOD = "SubscribeChannel"
HELLO_TIMEOUT_S = 10.0
#: A broker frame's head: the body's length, then its kind.
HEAD = struct.Struct("<IB")
MESSAGE, REFUSAL = 0, 1


class StreamListener(TcpListener):
    """Accepts readers, producers and share group members on the stream port, one stream per
    connection."""

    name = "stream listener"

    def __init__(self, service: Any, security: SecurityConfig) -> None:
        super().__init__()
        self.service = service
        self.security = security

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: an ephemeral port); the bound port."""
        return self._listen(host, port)

    async def _accepted(self, sock: socket.socket) -> None:
        connection = Connection(sock)
        started = time.perf_counter()
        code = "OK"
        method = METHOD
        watcher: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello_bytes = await connection.read_frame()
            try:
                hello = json.loads(hello_bytes)
            except ValueError:
                raise InvalidRequestError("the stream channel's hello is not JSON", field="hello") from None
            if not isinstance(hello, dict):
                raise InvalidRequestError("the stream channel's hello is not a JSON object", field="hello")
            call = hello.get("call", "subscribe")
            if call not in ("subscribe", "produce", "share"):
                raise InvalidRequestError(f"the stream channel serves subscribe, produce and share, not {call!r}",
                                          field="call")
            principal_var.set(self.security.authenticate(str(hello.get("token") or "") or None, None))
            if call == "produce":
                method = PRODUCE_METHOD
                host, port = sock.getpeername()[:2]
                await serve_produce(self.service, connection, f"stream:{host}:{port}",
                                    lambda body: connection.send([HEAD.pack(len(body), MESSAGE), body]))
                return
            if call == "share":
                method = SHARE_METHOD
                await serve_share(self.service, connection,
                                  lambda body: connection.send([HEAD.pack(len(body), MESSAGE), body]))
                return
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                body = await connection.read_frame()
            try:
                request = records_pb2.SubscribeRequest.FromString(body)
            except DecodeError:
                raise InvalidRequestError("malformed request: not a SubscribeRequest", field="request") from None
            serving = asyncio.current_task()
            assert serving is not None
            watcher = self._spawn(_watch_close(sock, serving))
            async for small, records in self.service.subscribe_messages(request):
                pieces = subscribe_response_pieces(small, records)
                await connection.send([HEAD.pack(sum(len(p) for p in pieces), MESSAGE), *pieces])
        except asyncio.CancelledError:
            pass  # the reader closed its side, as a reader that is done does (or the broker closes)
        except (ReplicaChannelError, OSError, TimeoutError):
            code = "CANCELLED"  # a reader that went away or never said hello
        except Exception as exc:  # refused: its reason, as the gRPC Subscribe's status says
            typed = as_logstore_error(exc)
            code = typed.reason
            if isinstance(exc, LogstoreError):
                log.info("stream channel refused: %s (%s)", typed.message, typed.reason)
            self.service.metrics.errors.labels(reason=typed.reason).inc()
            refusal = json.dumps({"reason": typed.reason, "message": typed.message,
                                  "metadata": typed.metadata}).encode()
            with contextlib.suppress(OSError, ReplicaChannelError):
                await connection.send([HEAD.pack(len(refusal), REFUSAL), refusal])
        finally:
            if watcher is not None:
                watcher.cancel()
            connection.close()
            self.service._count(method, code, started)


async def _watch_close(sock: socket.socket, serving: asyncio.Task[None]) -> None:
    """Cancel ``serving`` once the reader closes its side (or sends anything: it must not)."""
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_recv(sock, 1)
    serving.cancel()
