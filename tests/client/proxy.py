"""A TCP proxy on loopback that can hold back the broker's answers: with it a test makes "the
broker appended the batch, but its answer never reached the client" happen on purpose.

``AnswerHoldingProxy(upstream)`` listens on a free port and forwards each connection to
``upstream``. While ``hold()`` is on, bytes from the broker are kept instead of forwarded;
``drop_connections()`` closes every connection and throws the held bytes away (the client sees the
connection fail and reconnects through the proxy, which forwards freely again).
"""

from __future__ import annotations

import socket
import threading

from tests.broker_fixture import free_port


class AnswerHoldingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._holding = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hold(self) -> None:
        self._holding.set()

    def drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            self._holding.clear()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.drop_connections()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if answers and self._holding.is_set():
                    continue  # held back: the client never hears it
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
