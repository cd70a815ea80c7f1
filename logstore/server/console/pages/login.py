"""Login and logout: a token in, a session cookie out (see ``session.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from logstore.errors import NotAuthenticatedError
from logstore.server.auth import ANONYMOUS
from logstore.server.console.http import Request, Response
from logstore.server.console.render import esc, hidden
from logstore.server.console.routes import Context, public
from logstore.server.console.session import check_csrf, check_origin

if TYPE_CHECKING:
    from logstore.server.console.app import Console


def _next(target: str) -> str:
    """Only a path on this site (no //host, no scheme) may be the page after login."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _form(console: Console, next_page: str, message: str = "", status: int = 200) -> Response:
    note = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    if not console.security.enabled:
        note += "<p>This broker runs without a security file: everyone is the anonymous principal.</p>"
    body = (
        f'{note}<form method="post" action="/login" class="card narrow">'
        f"{hidden('next', next_page)}"
        '<label for="token">Bearer token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Log in</button></form>'
        "<p class=\"hint\">The token is checked like a gRPC call's <code>authorization: Bearer</code>; "
        "the browser keeps only a session cookie.</p>"
    )
    text = console.layout.page("Log in", body, principal=ANONYMOUS)
    return Response(status, text.encode())


async def login_form(console: Console, request: Request) -> Response:
    return _form(console, _next(request.query.get("next", "/")))


async def login(console: Console, request: Request) -> Response:
    check_origin(request)
    form = request.form()
    next_page = _next(form.get("next", "/"))
    try:
        session = console.sessions.login(form.get("token", ""))
    except NotAuthenticatedError as exc:
        return _form(console, next_page, exc.message, status=401)
    return Response(
        303, b"", "text/plain; charset=utf-8",
        [("Location", next_page), ("Set-Cookie", console.sessions.cookie(session, request.tls))],
    )


async def logout(ctx: Context) -> Response:
    check_csrf(ctx.identity, ctx.request.form())
    if ctx.identity.session is not None:
        ctx.console.sessions.end(ctx.identity.session.session_id)
    response = ctx.redirect("/login")
    response.headers.append(("Set-Cookie", ctx.console.sessions.clear_cookie()))
    return response


def register(console: Console) -> None:
    console.router.add("GET", "/login", public(login_form))
    console.router.add("POST", "/login", public(login))
    console.router.add("POST", "/logout", logout)

