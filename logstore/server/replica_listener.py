"""The leader's end of the replica data channel (frames: ``logstore.cluster.replica_channel``):
followers fetch over plain TCP, or TLS when the broker has a certificate, instead of the gRPC
ReplicaFetch, and each response goes from the segment's memoryviews to the socket with no
user-space copy. What is answered is exactly what ReplicaFetch answers
(``ClusterServiceMixin.replica_fetch_outcomes``): only the transport differs.

A connection starts with the follower's hello: its token is authenticated like a gRPC call's
bearer token (with mutual TLS, a client certificate's common name is the principal when no token
is sent) and must hold the ``replica`` right on the cluster, as for ReplicaFetch; a refused hello
is answered with the reason (NOT_AUTHENTICATED, NOT_AUTHORIZED, INVALID_REQUEST) and the
connection closed. Any error later closes the connection (the follower reconnects); the fetches
are counted in ``logstore_requests_total{method="ReplicaFetchChannel"}``.

A response view of a segment stays valid while it is sent: segments keep their mapping for
readers (``storage.segment``); a replica truncated meanwhile faults the send, which closes the
connection.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import time
from typing import Any

from google.protobuf.message import DecodeError

from logstore.api.v1 import cluster_pb2
from logstore.cluster.replica_channel import Connection, ReplicaChannelError, frame, response_pieces
from logstore.errors import InvalidRequestError, LogstoreError
from logstore.server.auth import SecurityConfig, principal_var
from logstore.server.tcp_listener import TcpListener

log = logging.getLogger(__name__)

METHOD = "ReplicaFetchChannel"
HELLO_TIMEOUT_S = 10.0


def _certificate_name(peercert: Any) -> str | None:
    for entry in (peercert or {}).get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return None


class ReplicaListener(TcpListener):
    """Accepts followers on the replica port and serves their fetches."""

    name = "replica listener"

    def __init__(self, service: Any, security: SecurityConfig, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self.service = service
        self.security = security
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: an ephemeral port); the bound port."""
        if self.ssl_context is not None:
            self._server = await asyncio.start_server(self._accepted_tls, host, port, ssl=self.ssl_context)
            return int(self._server.sockets[0].getsockname()[1])
        return self._listen(host, port)

    async def _accepted(self, sock: socket.socket) -> None:
        await self._serve(Connection(sock), None)

    async def _accepted_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._serve(Connection(reader=reader, writer=writer), writer.get_extra_info("peercert"))

    async def _hello(self, connection: Connection, peercert: Any) -> bool:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello = json.loads(await connection.read_frame())
            if not isinstance(hello, dict):
                raise InvalidRequestError("the replica channel's hello is not a JSON object", field="hello")
            principal_var.set(self.security.authenticate(str(hello.get("token") or "") or None,
                                                         _certificate_name(peercert)))
            self.service.replica_fetch_allowed()
        except LogstoreError as exc:
            log.warning("replica channel refused: %s (%s)", exc.message, exc.reason)
            self.service.metrics.errors.labels(reason=exc.reason).inc()
            with contextlib.suppress(OSError, ReplicaChannelError):
                await connection.send(frame(json.dumps({"reason": exc.reason, "message": exc.message}).encode()))
            return False
        except (ValueError, TimeoutError):
            log.warning("replica channel: a malformed or missing hello")
            return False
        await connection.send(frame(b'{"ok": true}'))
        return True

    async def _serve(self, connection: Connection, peercert: Any) -> None:
        service = self.service
        try:
            if not await self._hello(connection, peercert):
                return
            while True:
                body = await connection.read_frame()
                started = time.perf_counter()
                service.in_flight += 1
                try:
                    request = cluster_pb2.ReplicaFetchRequest.FromString(body)
                    _, outcomes = await service.replica_fetch_outcomes(request)
                    await connection.send(response_pieces(
                        [(service.replica_fetched_partition(o), o.records) for o in outcomes]
                    ))
                finally:
                    service.in_flight -= 1
                service._count(METHOD, "OK", started)
        except (ReplicaChannelError, OSError):
            pass  # the follower went away, or its connection broke: it reconnects
        except DecodeError:
            log.warning("replica channel: a malformed ReplicaFetchRequest; closing")
        except LogstoreError as exc:
            log.info("replica channel fetch refused: %s (%s); closing", exc.message, exc.reason)
            service.metrics.errors.labels(reason=exc.reason).inc()
        except Exception:
            log.exception("replica channel fetch failed; closing")
        finally:
            connection.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await super().close()
