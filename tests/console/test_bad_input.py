"""Bad input in URLs and forms gets a clear error page (status, message, reason), never a
stack trace (console/app.py, console/browse.py)."""

from __future__ import annotations

import pytest

from tests.console.conftest import get, raw
from tests.server.helpers import create_topic, produce, unique_topic, values_of


@pytest.fixture(scope="module")
def topic(stub):
    name = unique_topic("bad-input")
    create_topic(stub, name, partitions=2)
    produce(stub, name, values_of("v", 5), partition=0)
    return name


def assert_clear(body: str, *fragments: str) -> None:
    assert 'class="error"' in body
    assert "Traceback" not in body and 'File "' not in body
    for fragment in fragments:
        assert fragment in body, (fragment, body[-2000:])


def test_an_unknown_topic_is_a_404_page_naming_it(console_broker):
    status, body = get(console_broker, "/topics/no-such-topic")
    assert status == 404
    assert_clear(body, "topic &#x27;no-such-topic&#x27; does not exist", "UNKNOWN_TOPIC")


def test_an_invalid_topic_name_is_a_400_page(console_broker):
    status, body = get(console_broker, "/topics/bad%20name%21")
    assert status == 400
    assert_clear(body, "invalid topic name", "INVALID_NAME")


def test_dot_dot_segments_do_not_escape_the_routes(console_broker):
    status, body, _ = raw(console_broker, "GET", "/topics/../../etc/passwd")
    assert status == 404
    assert_clear(body, "no page at")
    status, body, _ = raw(console_broker, "GET", "/topics/..%2F..%2Fetc%2Fpasswd/messages")
    assert status == 404
    assert "root:" not in body


def test_a_topic_named_dot_dot_is_an_invalid_name(console_broker):
    status, body, _ = raw(console_broker, "GET", "/topics/%2E%2E")
    assert status == 400
    assert_clear(body, "INVALID_NAME")


def test_static_assets_are_a_fixed_list(console_broker):
    status, body, _ = raw(console_broker, "GET", "/static/../../pyproject.toml")
    assert status == 404
    assert "[project]" not in body


def test_an_offset_past_the_log_end_names_the_range(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages?partition=0&from=offset&offset=99")
    assert status == 400
    assert_clear(body, "offset 99 of", "out of range [0, 5]", "OFFSET_OUT_OF_RANGE")


def test_a_huge_limit_is_refused_with_the_bound(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages?limit=100000000000")
    assert status == 400
    assert_clear(body, "limit must be between 1 and 1000")


def test_a_partition_the_topic_lacks_is_refused(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages?partition=7")
    assert status == 400
    assert_clear(body, "partition must be between 0 and 1, not 7")


def test_a_non_numeric_offset_is_refused(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages?from=offset&offset=abc")
    assert status == 400
    assert_clear(body, "offset must be a whole number")


def test_an_unreadable_time_is_refused(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages?from=time&time=yesterday")
    assert status == 400
    assert_clear(body, "time must be epoch milliseconds or an ISO 8601")


def test_an_unknown_mode_or_format_is_refused(console_broker, topic):
    assert get(console_broker, f"/topics/{topic}/messages?from=middle")[0] == 400
    status, body = get(console_broker, f"/topics/{topic}/messages?format=xml")
    assert status == 400
    assert_clear(body, "format must be one of auto, text, json, hex")


def test_an_unknown_group_is_a_404_page(console_broker):
    status, body = get(console_broker, "/groups/nobody-here")
    assert status == 404
    assert_clear(body, "UNKNOWN_GROUP")


def test_a_download_with_a_bad_range_is_an_error_not_a_partial_file(console_broker, topic):
    status, body = get(console_broker, f"/topics/{topic}/messages.jsonl?from=offset&offset=-1")
    assert status == 400
    assert_clear(body, "offset must be between 0")


def test_a_form_without_its_csrf_token_is_refused(console_broker):
    status, body, _ = raw(
        console_broker, "POST", "/topics", "name=forged&partitions=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 400
    assert_clear(body, "csrf token is missing or stale")


def test_a_create_form_with_bad_partitions_is_refused(console_broker):
    status, body, headers = raw(console_broker, "GET", "/topics")
    cookie = headers["Set-Cookie"].split(";")[0]
    csrf = body.split('name="csrf" value="')[1].split('"')[0]
    status, body, _ = raw(
        console_broker, "POST", "/topics", f"csrf={csrf}&name=fine-name&partitions=lots",
        {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    assert status == 400
    assert_clear(body, "partitions must be a whole number")


def test_a_malformed_request_line_is_a_400(console_broker):
    import socket

    host, port = console_broker.metrics_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")


def test_an_oversized_request_head_is_a_431(console_broker):
    status, _, _ = raw(console_broker, "GET", "/", headers={"X-Big": "x" * 40_000})
    assert status == 431
