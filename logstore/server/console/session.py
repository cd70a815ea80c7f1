"""Who is asking: bearer tokens, login sessions (an HttpOnly cookie), client certificates, CSRF.

A browser presents its token once, in the login form (``POST /login``); the console checks it
against the security file exactly like the gRPC interceptor does and answers with a session
cookie ``logstore_session`` (HttpOnly, SameSite=Strict, Secure under TLS, 12 hours). The cookie
holds a random session id, never the token. Scripts may instead send
``Authorization: Bearer <token>`` with every request. With mutual TLS, a client certificate's
common name is the principal when neither is present. Without a security file everyone is the
anonymous principal and gets a session on first visit (it carries the CSRF token).

CSRF: every form that changes something carries the session's random ``csrf`` field; a POST
whose field does not match its session's, or whose ``Origin`` names another host, is refused.
Requests authenticated by an ``Authorization`` header need no CSRF field (a browser never adds
that header to a cross-site request on its own).

Threading: used from the event loop only.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from logstore.errors import InvalidRequestError, NotAuthenticatedError
from logstore.server.auth import ANONYMOUS, SecurityConfig
from logstore.server.console.http import Request

COOKIE = "logstore_session"
SESSION_TTL_S = 12 * 3600
#: The oldest sessions are forgotten past this many (a flood of anonymous visits stays bounded).
MAX_SESSIONS = 10_000


@dataclass
class Session:
    session_id: str
    principal: str
    csrf: str
    expires_s: float
    #: True when the principal proved itself (token or certificate), not the anonymous default.
    authenticated: bool


@dataclass
class Identity:
    """The principal behind one request and how it was established."""

    principal: str
    session: Session | None
    #: By an ``Authorization`` header (no CSRF field needed) rather than a cookie.
    by_header: bool = False
    #: A new session was made for this request: its cookie goes out with the answer.
    new_session: bool = False

    @property
    def authenticated(self) -> bool:
        return self.by_header or (self.session is not None and self.session.authenticated)

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


class Sessions:
    def __init__(self, security: SecurityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.security = security
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, principal: str, authenticated: bool) -> Session:
        session = Session(
            secrets.token_urlsafe(24), principal, secrets.token_urlsafe(24),
            self.clock() + SESSION_TTL_S, authenticated,
        )
        self._sessions[session.session_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_s < self.clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def login(self, token: str) -> Session:
        """A session for the principal owning ``token`` (NotAuthenticatedError if none)."""
        principal = self.security.authenticate(token.strip(), None)
        return self.create(principal, authenticated=True)

    def identify(self, request: Request) -> Identity:
        """The request's principal; NotAuthenticatedError when the broker needs credentials
        and the request brings none (or unknown ones)."""
        header = request.headers.get("authorization", "")
        if header:
            if not header.lower().startswith("bearer "):
                raise NotAuthenticatedError("the Authorization header must be 'Bearer <token>'")
            principal = self.security.authenticate(header[7:].strip(), None)
            return Identity(principal, None, by_header=True)
        session = self.get(request.cookies.get(COOKIE, ""))
        if session is not None:
            return Identity(session.principal, session)
        if self.security.enabled:
            if request.certificate_name:  # a session, so that forms still need their csrf field
                session = self.create(request.certificate_name, authenticated=True)
                return Identity(request.certificate_name, session, new_session=True)
            raise NotAuthenticatedError("this broker needs credentials: log in with a token")
        return Identity(ANONYMOUS, self.create(ANONYMOUS, authenticated=False), new_session=True)

    def cookie(self, session: Session, secure: bool) -> str:
        flags = "; Secure" if secure else ""
        return f"{COOKIE}={session.session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_S}{flags}"

    @staticmethod
    def clear_cookie() -> str:
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def check_origin(request: Request) -> None:
    """Refuse a POST that a page on another site made (its Origin names another host)."""
    origin = request.headers.get("origin", "")
    if origin and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")):
        raise InvalidRequestError(
            f"a form posted from another site ({origin}) is refused", field="origin", origin=origin
        )


def check_csrf(identity: Identity, form: dict[str, str]) -> None:
    if identity.by_header:
        return
    sent = form.get("csrf", "")
    if not sent or identity.session is None or not hmac.compare_digest(sent, identity.session.csrf):
        raise InvalidRequestError(
            "the form's csrf token is missing or stale: reload the page and submit again", field="csrf"
        )
