"""Routing and the per-request context every page handler receives.

A page module registers its handlers with ``router.add("GET", "/topics/{topic}", handler)``;
``{name}`` matches one path segment (percent-decoded, never containing ``/``) and is passed to
the handler as a keyword argument. Pages added later (share groups, the cluster) register the
same way and list themselves in ``Layout.nav``.

``Context`` answers the two questions every handler asks: may this principal read it (the same
ACLs as the gRPC API: read on the topic or group), and may it change it (admin rights on it —
and, without a security file, only when the broker runs with ``console_writes``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from logstore.errors import InvalidRequestError, NotAuthorizedError
from logstore.server.console.http import Request, Response, StreamResponse
from logstore.server.console.render import hidden
from logstore.server.console.session import Identity, check_csrf, check_origin

if TYPE_CHECKING:
    from logstore.server.console.app import Console

PageHandler = Callable[..., Awaitable[Response | StreamResponse]]
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: PageHandler


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: PageHandler) -> None:
        parts, last = [], 0
        for found in _PARAM.finditer(path):
            parts += [re.escape(path[last:found.start()]), f"(?P<{found.group(1)}>[^/]+)"]
            last = found.end()
        parts.append(re.escape(path[last:]))
        self.routes.append(Route(method, re.compile("^" + "".join(parts) + "$"), handler))

    def match(self, method: str, path: str) -> tuple[PageHandler, dict[str, str]] | None | bool:
        """(handler, params); False when the path exists for another method; None if unknown."""
        other_method = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route.handler, found.groupdict()
            other_method = True
        return False if other_method else None


@dataclass
class Context:
    console: Console
    request: Request
    identity: Identity

    @property
    def principal(self) -> str:
        return self.identity.principal

    @property
    def broker(self) -> Any:
        return self.console.broker

    def can_read(self, resource: str, name: str) -> bool:
        return self.console.security.allowed(self.principal, resource, name, "read")

    def require_read(self, resource: str, name: str) -> None:
        if not self.can_read(resource, name):
            raise NotAuthorizedError(self.principal, "read", resource, name)

    def can_write(self, resource: str, name: str) -> bool:
        """Write actions (create/delete topic, reset offsets, produce a test record)."""
        security = self.console.security
        if not security.enabled:
            return self.console.writes
        return self.identity.authenticated and security.allowed(self.principal, resource, name, "admin")

    def can_write_some(self, resource: str) -> bool:
        """Whether any write action on ``resource`` kinds may be offered (forms are shown)."""
        security = self.console.security
        if not security.enabled:
            return self.console.writes
        return self.identity.authenticated and any(
            rule.resource == resource and rule.principal in ("*", self.principal) and "admin" in rule.operations
            for rule in security.acl
        )

    def require_write(self, resource: str, name: str) -> dict[str, str]:
        """Check the form (CSRF, origin) and the right; returns the form's fields."""
        if self.request.method != "POST":
            raise InvalidRequestError("changes are made with POST only", field="method")
        check_origin(self.request)
        form = self.request.form()
        check_csrf(self.identity, form)
        if not self.can_write(resource, name):
            if not self.console.security.enabled:
                raise NotAuthorizedError(self.principal, "admin", resource, f"{name} (console_writes is off)")
            raise NotAuthorizedError(self.principal, "admin", resource, name)
        return form

    def page(self, title: str, body: str, *, sse: str = "", current: str = "", status: int = 200) -> Response:
        text = self.console.layout.page(
            title, body, principal=self.principal, csrf=self.identity.csrf, sse=sse, current=current,
            logged_in=self.identity.session is not None and self.identity.session.authenticated,
        )
        return Response(status, text.encode())

    def csrf_field(self) -> str:
        return hidden("csrf", self.identity.csrf)

    @staticmethod
    def redirect(location: str, status: int = 303) -> Response:
        return Response(status, b"", "text/plain; charset=utf-8", [("Location", location)])


def public(handler: Any) -> Any:
    """Mark a page handler that answers without identifying the caller (login); it is called
    as ``handler(console, request, **params)``."""
    handler.public = True
    return handler
