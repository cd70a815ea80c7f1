"""A small HTTP/1.1 server on the broker's asyncio event loop (the metrics listener).

It serves ``/metrics`` and the web console. Handlers run on the loop, so they read broker state
without threads or locks, exactly like the gRPC handlers.

What it speaks: ``GET``/``HEAD``/``POST`` with a ``Content-Length`` body (no chunked requests),
keep-alive, and two kinds of answers: a whole ``Response`` (sent with ``Content-Length``) or a
``StreamResponse`` whose body is an async iterator of chunks (server-sent events, JSONL
downloads), sent without a length and followed by closing the connection. Requests beyond the
limits below are answered 400/413/431 and the connection is closed.

Threading: everything runs on the event loop; a ``HttpServer`` is used from that loop only.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

log = logging.getLogger(__name__)

#: The request line plus headers may not exceed this.
MAX_HEAD_BYTES = 32 << 10
#: A request body (a form) may not exceed this.
MAX_BODY_BYTES = 1 << 20
#: A query string or form may not carry more fields than this.
MAX_FIELDS = 64
#: An idle keep-alive connection is closed after this long.
IDLE_TIMEOUT_S = 60.0
#: A client has this long to send a whole request once it started.
REQUEST_TIMEOUT_S = 10.0


class HttpError(Exception):
    """A malformed request: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    #: The common name of the client's TLS certificate (mutual TLS), if any.
    certificate_name: str | None = None
    tls: bool = False

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name not in jar:
                jar[name] = value
        return jar

    def form(self) -> dict[str, str]:
        """The urlencoded body's fields (first value of each)."""
        if not self.body:
            return {}
        return _fields(self.body.decode("utf-8", errors="replace"))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class StreamResponse:
    """A body sent as it is produced, then the connection is closed."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "text/event-stream; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


def _fields(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise HttpError(400, f"more than {MAX_FIELDS} fields") from None
    result: dict[str, str] = {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _certificate_name(writer: asyncio.StreamWriter) -> str | None:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert()
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float) -> Request | None:
    """The next request on the connection, or None when the client closed it (or went idle)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {"x-http-version": version}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}; {value}" if key == "cookie" and key in headers else value
    if "transfer-encoding" in headers:
        raise HttpError(400, "chunked request bodies are not supported; send Content-Length")
    body = b""
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    if length:
        try:
            body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError):
            raise HttpError(400, "request body shorter than Content-Length") from None
    if not target.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    raw_path, _, query_text = target.partition("?")
    return Request(
        method=method.upper(),
        target=target,
        path=unquote(raw_path, errors="replace"),
        query=_fields(query_text),
        headers=headers,
        body=body,
        certificate_name=_certificate_name(writer),
        tls=writer.get_extra_info("ssl_object") is not None,
    )


def _head(status: int, content_type: str, headers: list[tuple[str, str]], length: int | None, close: bool) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close" if close else "Connection: keep-alive")
    lines.append("X-Content-Type-Options: nosniff")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")


class HttpServer:
    """Accepts connections and answers each request with ``handler``."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port."""
        self._server = await asyncio.start_server(
            self._connection, host, port, ssl=self.ssl_context, limit=MAX_HEAD_BYTES,
            reuse_address=True,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every open connection (live streams included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout_s = IDLE_TIMEOUT_S
        while True:
            try:
                request = await read_request(reader, writer, timeout_s)
            except HttpError as exc:
                body = f"{exc.status} {exc.message}\n".encode()
                writer.write(_head(exc.status, "text/plain; charset=utf-8", [], len(body), True) + body)
                await writer.drain()
                return
            if request is None:
                return
            close = request.headers.get("connection", "").lower() == "close" or request.headers[
                "x-http-version"
            ] == "HTTP/1.0"
            response = await self.handler(request)
            if isinstance(response, StreamResponse):
                writer.write(_head(response.status, response.content_type, response.headers, None, True))
                await writer.drain()
                try:
                    async for chunk in response.chunks:
                        writer.write(chunk)
                        await writer.drain()
                finally:
                    aclose = getattr(response.chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                return
            body = b"" if request.method == "HEAD" else response.body
            writer.write(_head(response.status, response.content_type, response.headers, len(response.body), close) + body)
            await writer.drain()
            if close:
                return
