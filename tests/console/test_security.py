"""The console's security is the gRPC API's: TLS on the same listener, bearer tokens (login form
-> HttpOnly session cookie, or an Authorization header) and ACLs (console/session.py,
console/routes.py)."""

from __future__ import annotations

import ssl
import urllib.request

import grpc
import pytest
from playwright.sync_api import expect

from logstore import Admin
from logstore.server.auth import hash_token
from tests.broker_fixture import BrokerProcess
from tests.certs import make_certificates
from tests.console.conftest import TIMEOUT_S, get, raw, url

expect.set_options(timeout=10_000)

ADMIN, READER, NOBODY = "admin-token-1", "reader-token-1", "nobody-token-1"
SECURITY = f"""
[principals.admin]
token_sha256 = "{hash_token(ADMIN)}"
[principals.reader]
token_sha256 = "{hash_token(READER)}"
[principals.nobody]
token_sha256 = "{hash_token(NOBODY)}"
[[acl]]
principal = "admin"
resource = "topic"
name = "*"
operations = ["admin"]
[[acl]]
principal = "admin"
resource = "group"
name = "*"
operations = ["admin"]
[[acl]]
principal = "reader"
resource = "topic"
name = "public-*"
operations = ["read"]
[[acl]]
principal = "reader"
resource = "group"
name = "public-*"
operations = ["read"]
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-secure")
    (root / "security.toml").write_text(SECURITY)
    process = BrokerProcess(root / "data", args=["--security-file", str(root / "security.toml")]).start()
    with Admin(process.address, token=ADMIN) as admin:
        admin.create_topic("public-menu", partitions=1)
        admin.create_topic("secret-recipes", partitions=1)
    yield process
    process.kill()


def login(page, broker: BrokerProcess, token: str, next_path: str = "/") -> None:
    page.goto(url(broker, next_path))
    expect(page.locator("h1")).to_have_text("Log in")
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Log in").click()


def test_without_credentials_a_page_sends_the_browser_to_log_in(page, secured):
    page.goto(url(secured, "/topics/public-menu"))
    expect(page.locator("h1")).to_have_text("Log in")
    assert "next=%2Ftopics%2Fpublic-menu" in page.url


def test_an_unknown_token_is_refused_at_login(page, secured):
    login(page, secured, "not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("the bearer token is not known")


def test_login_sets_an_http_only_session_cookie_not_the_token(page, secured):
    login(page, secured, READER)
    expect(page.locator("h1")).to_have_text("Overview")
    cookies = page.context.cookies()
    (session,) = [c for c in cookies if c["name"] == "logstore_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert READER not in session["value"]


def test_a_token_sees_only_the_topics_it_may_read(page, secured):
    login(page, secured, READER)
    expect(page.get_by_role("link", name="public-menu")).to_be_visible()
    expect(page.get_by_role("link", name="secret-recipes")).to_have_count(0)

    page.goto(url(secured, "/topics/secret-recipes/messages"))
    expect(page.get_by_role("alert")).to_contain_text("principal 'reader' may not read topic 'secret-recipes'")


def test_a_token_without_admin_rights_gets_no_write_forms_and_its_posts_are_refused(page, secured):
    login(page, secured, READER, "/topics/public-menu")
    expect(page.locator("h1")).to_have_text("Topic public-menu")
    expect(page.get_by_role("button", name="Delete topic")).to_have_count(0)
    csrf = page.evaluate("document.querySelector('input[name=csrf]').value")
    status = page.evaluate(
        """async (csrf) => (await fetch('/topics/public-menu/delete', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'confirm=public-menu&csrf=' + encodeURIComponent(csrf)})).status""",
        csrf,
    )
    assert status == 403
    with Admin(secured.address, token=ADMIN) as admin:
        assert "public-menu" in [t.name for t in admin.list_topics()]


def test_an_admin_token_may_create_a_topic(page, secured):
    login(page, secured, ADMIN, "/topics")
    page.get_by_label("Name").fill("admin-made")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("h1")).to_have_text("Topic admin-made")


def test_a_bearer_header_works_without_a_session(secured):
    status, body = get(secured, "/topics/public-menu", {"Authorization": f"Bearer {READER}", "Accept": "text/html"})
    assert status == 200 and "Topic public-menu" in body
    status, body = get(secured, "/topics/public-menu", {"Authorization": f"Bearer {NOBODY}"})
    assert status == 403 and "principal &#x27;nobody&#x27; may not read topic" in body
    status, body = get(secured, "/", {"Authorization": "Bearer wrong"})
    assert status == 401 and "NOT_AUTHENTICATED" in body


def test_a_token_sees_only_the_share_groups_it_may_read(secured):
    with Admin(secured.address, token=ADMIN) as admin:
        for group in ("public-line", "secret-line"):
            admin.alter_share_group_config(group, {"max_deliveries": 4})
    reader = {"Authorization": f"Bearer {READER}"}
    status, body = get(secured, "/queues", reader)
    assert status == 200 and 'href="/queues/public-line"' in body and "secret-line" not in body
    status, body = get(secured, "/queues/secret-line", reader)
    assert status == 403 and "principal &#x27;reader&#x27; may not read group &#x27;secret-line&#x27;" in body
    status, _, _ = raw(secured, "GET", "/queues/secret-line/events", headers=reader)
    assert status == 403
    status, body = get(secured, "/queues", {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and 'href="/queues/secret-line"' in body


def test_live_streams_need_credentials_too(secured):
    status, _, _ = raw(secured, "GET", "/topics/public-menu/tail")
    assert status == 401
    status, _, _ = raw(secured, "GET", "/topics/secret-recipes/tail", headers={"Authorization": f"Bearer {READER}"})
    assert status == 403


def test_metrics_stay_open_for_the_scraper(secured):
    status, body = get(secured, "/metrics")
    assert status == 200 and "logstore_log_end_offset" in body


def test_logout_ends_the_session(page, secured):
    login(page, secured, READER)
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("h1")).to_have_text("Log in")
    page.goto(url(secured, "/"))
    expect(page.locator("h1")).to_have_text("Log in")


def test_a_form_posted_from_another_site_is_refused(secured):
    status, body, _ = raw(
        secured, "POST", "/topics", "name=x&partitions=1",
        {"Authorization": f"Bearer {ADMIN}", "Origin": "http://evil.example",
         "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 400 and "posted from another site" in body


def test_without_console_writes_an_open_broker_is_read_only(broker_factory):
    broker = broker_factory()
    status, body, _ = raw(broker, "GET", "/topics")
    assert status == 200 and "Create a topic" not in body
    status, body, _ = raw(  # a header-authenticated post needs no csrf field: only the right is missing
        broker, "POST", "/topics", "name=nope&partitions=1",
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer any"},
    )
    assert status == 403 and "console_writes is off" in body


def test_no_console_leaves_only_metrics(broker_factory):
    broker = broker_factory(args=["--no-console"])
    assert get(broker, "/")[0] == 404
    status, body = get(broker, "/metrics")
    assert status == 200 and "logstore_requests" in body


def test_the_console_speaks_the_brokers_tls(tmp_path, broker_factory):
    certs = make_certificates(tmp_path / "certs")
    broker = BrokerProcess(tmp_path / "data", args=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)])
    broker.start(wait=False)
    try:
        broker.wait_ready(credentials=grpc.ssl_channel_credentials(certs.ca.read_bytes()))
        context = ssl.create_default_context(cafile=str(certs.ca))
        with urllib.request.urlopen(f"https://{broker.metrics_address}/", context=context, timeout=TIMEOUT_S) as reply:
            assert reply.status == 200
            assert "logstore_session=" in reply.headers["Set-Cookie"] and "Secure" in reply.headers["Set-Cookie"]
        with urllib.request.urlopen(f"https://{broker.metrics_address}/metrics", context=context, timeout=TIMEOUT_S) as reply:
            assert b"logstore_requests" in reply.read()
    finally:
        broker.kill()
