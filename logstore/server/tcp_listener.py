"""What the broker's plain TCP listeners share (the replica port, ``replica_listener``; the stream
port, ``stream_listener``): a non-blocking listening socket, an accept loop, one task per
connection, and ``close`` cancelling every task and waiting for it.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

#: How long the accept loop waits after a failed accept (out of file descriptors...).
ACCEPT_RETRY_S = 0.1


class TcpListener:
    """Subclasses serve each accepted socket in ``_accepted``."""

    #: In log lines: which listener.
    name = "listener"

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _listen(self, host: str, port: int) -> int:
        """Listen on host:port (0: an ephemeral port) and accept from now on; the bound port."""
        listener = socket.create_server((host.strip("[]"), port),
                                        family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setblocking(False)
        self._listener = listener
        self._spawn(self._accept(listener))
        return int(listener.getsockname()[1])

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.name, exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            self._spawn(self._accepted(sock))

    async def _accepted(self, sock: socket.socket) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
