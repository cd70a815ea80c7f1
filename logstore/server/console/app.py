"""The console: one handler for every request on the metrics listener.

``/metrics`` is answered as before (no authentication, Prometheus text or OpenMetrics);
``/static/...`` serves the packaged stylesheet and script; everything else is a console page,
answered only when the console is on (``--no-console`` turns it off: 404). Each page request is
identified (``session.py``), routed (``routes.py``) and rendered; any error becomes an error page
with the error's message and stable reason and the HTTP status of its gRPC code — never a stack
trace (an unexpected exception is logged and shown as "unknown server error").
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import grpc

from logstore.broker import Broker
from logstore.errors import LogstoreError, NotAuthenticatedError
from logstore.server.auth import ANONYMOUS, SecurityConfig
from logstore.server.console.http import Request, Response, StreamResponse
from logstore.server.console.render import Layout
from logstore.server.console.routes import Context, Router
from logstore.server.console.sampler import Sampler
from logstore.server.console.session import Sessions
from logstore.server.errors import as_logstore_error, status_code
from logstore.server.metrics import Metrics

log = logging.getLogger(__name__)

#: The HTTP status of each gRPC code an error maps to (``logstore.server.errors``).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}

#: Pages may load only the console's own assets (no inline script, no other origin).
SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]

#: A live stream sends a comment this often even when nothing changed (keeps proxies open).
KEEPALIVE_S = 15.0


class Console:
    """Owns the sampler, the sessions and the routes; ``handle`` answers one request."""

    def __init__(
        self, broker: Broker, metrics: Metrics, security: SecurityConfig, *,
        enabled: bool = True, writes: bool = False, data_dir: Path | None = None,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.security = security
        self.enabled = enabled
        #: Without a security file: whether anonymous visitors may use write actions.
        self.writes = writes
        self.data_dir = data_dir
        self.started_s = time.time()
        self.layout = Layout()
        #: Set by the cluster layer when clustered (``pages.overview.ClusterView``); None = single node.
        self.cluster_view: Any = None
        #: Set when clustered: (topic, partition) -> (leader, ISR) as text for the topic page.
        self.placement_view: Any = None
        self.router = Router()
        self.sessions = Sessions(security)
        self.sampler = Sampler(broker, metrics)
        self._static = {
            name: resources.files("logstore.server.console").joinpath("static", name).read_bytes()
            for name in STATIC
        }
        if enabled:
            from logstore.server.console import pages

            pages.register(self)

    async def start(self) -> None:
        if self.enabled:
            self.sampler.start()

    async def close(self) -> None:
        await self.sampler.stop()

    # -- dispatch -----------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | StreamResponse:
        if request.path == "/metrics":
            return self._metrics(request)
        if not self.enabled:
            return Response(404, b"404 not found (the console is off: --no-console)\n", "text/plain; charset=utf-8")
        if request.path == "/favicon.ico":
            return Response(204, b"", "image/x-icon", [("Cache-Control", "max-age=86400")])
        if request.path.startswith("/static/"):
            return self._asset(request.path[len("/static/"):])
        identity = None
        try:
            found = self.router.match(request.method, request.path)
            if found is None:
                raise _NotFound(f"no page at {request.path}")
            if found is False:
                return self._plain(405, f"{request.method} is not allowed here")
            assert not isinstance(found, bool)
            handler, params = found
            if getattr(handler, "public", False):
                identity = None
                response = await handler(self, request, **params)
            else:
                identity = self.sessions.identify(request)
                context = Context(self, request, identity)
                response = await handler(context, **params)
        except NotAuthenticatedError as exc:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return Context.redirect("/login?next=" + quote(request.target, safe=""))
            response = self.error_response(exc, ANONYMOUS)
        except Exception as exc:  # every error is a page, never a traceback
            response = self.error_response(exc, identity.principal if identity else ANONYMOUS)
        if identity is not None and identity.new_session and identity.session is not None:
            response.headers.append(("Set-Cookie", self.sessions.cookie(identity.session, request.tls)))
        if isinstance(response, Response) and response.content_type.startswith("text/html"):
            response.headers.extend(SECURITY_HEADERS)
        return response

    def error_response(self, exc: BaseException, principal: str) -> Response:
        if isinstance(exc, _NotFound):
            status, title, message, reason = 404, "Not found", exc.message, "NOT_FOUND"
        else:
            typed = as_logstore_error(exc)  # logs anything unexpected, with its traceback
            status = HTTP_STATUS.get(status_code(typed), 500)
            title, message, reason = _title(status), typed.message, typed.reason
        text = self.layout.error(status, title, message, reason, principal=principal)
        return Response(status, text.encode())

    @staticmethod
    def _plain(status: int, message: str) -> Response:
        return Response(status, f"{status} {message}\n".encode(), "text/plain; charset=utf-8")

    def _asset(self, name: str) -> Response:
        body = self._static.get(name)
        if body is None:
            return self._plain(404, "no such asset")
        return Response(200, body, STATIC[name], [("Cache-Control", "max-age=3600")])

    def _metrics(self, request: Request) -> Response:
        names = [value for key, value in _all_query_values(request.target) if key == "name[]"]
        body, content_type = self.metrics.exposition(request.headers.get("accept", ""), names or None)
        headers = []
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, content_type, headers)

    # -- live streams -------------------------------------------------------------------------------

    def live(self, snapshot: Callable[[], dict[str, Any]], *, tick: bool = True) -> StreamResponse:
        """Server-sent events: ``snapshot()`` now and after every sample, as ``event: live``."""

        async def chunks() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            while not self.broker.closing:
                try:
                    data = snapshot()
                except LogstoreError as exc:  # the topic or group went away
                    yield sse("gone", {"message": exc.message})
                    return
                yield sse("live", data)
                async with self.sampler.tick:
                    try:
                        await asyncio.wait_for(self.sampler.tick.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        pass

        return StreamResponse(chunks(), headers=[("Cache-Control", "no-store")])


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _title(status: int) -> str:
    return {
        400: "Bad request", 401: "Not logged in", 403: "Not allowed", 404: "Not found",
        409: "Conflict", 429: "Limit reached", 503: "Unavailable", 504: "Timed out",
    }.get(status, "Server error")


def _all_query_values(target: str) -> list[tuple[str, str]]:
    _, _, query = target.partition("?")
    try:
        return parse_qsl(query, max_num_fields=64)
    except ValueError:
        return []
