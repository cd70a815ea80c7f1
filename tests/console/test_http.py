"""The HTTP server on the metrics listener (console/http.py, console/app.py): keep-alive, HEAD,
/metrics as before, live streams, and a clean shutdown with streams open."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time

from tests.console.conftest import TIMEOUT_S, raw
from tests.server.helpers import create_topic, unique_topic


def test_a_connection_is_kept_alive_between_requests(console_broker):
    host, port = console_broker.metrics_address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        for path in ("/", "/topics", "/static/console.css", "/metrics"):
            connection.request("GET", path)
            reply = connection.getresponse()
            reply.read()
            assert reply.status == 200, path
        assert connection.sock is not None  # the same socket served all four
    finally:
        connection.close()


def test_head_answers_the_headers_without_the_body(console_broker):
    status, body, headers = raw(console_broker, "HEAD", "/")
    assert status == 200 and body == ""
    assert int(headers["Content-Length"]) > 0


def test_a_page_refuses_another_method(console_broker):
    status, body, _ = raw(console_broker, "POST", "/groups")
    assert status == 405


def test_metrics_speak_openmetrics_when_asked(console_broker):
    status, body, headers = raw(console_broker, "GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_metrics_are_gzipped_when_accepted(console_broker):
    host, port = console_broker.metrics_address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        reply = connection.getresponse()
        assert reply.getheader("Content-Encoding") == "gzip"
        assert b"logstore_requests" in gzip.decompress(reply.read())
    finally:
        connection.close()


def test_metrics_can_be_restricted_by_name(console_broker):
    status, body, _ = raw(console_broker, "GET", "/metrics?name[]=logstore_subscriptions_open")
    assert status == 200
    assert "logstore_subscriptions_open" in body and "logstore_log_end_offset" not in body


def test_pages_forbid_framing_and_foreign_scripts(console_broker):
    _, _, headers = raw(console_broker, "GET", "/")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def _events(broker, path: str, wanted: int) -> list[tuple[str, object]]:
    host, port = broker.metrics_address.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + TIMEOUT_S
        while data.count(b"\n\nevent:") < wanted and time.monotonic() < deadline:
            data += sock.recv(65536)
    events = []
    for block in data.split(b"\r\n\r\n", 1)[1].split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
        if b"event" in lines:
            events.append((lines[b"event"].decode(), json.loads(lines[b"data"])))
    return events


def test_a_live_stream_sends_a_snapshot_each_second(console_broker, stub):
    topic = unique_topic("live")
    create_topic(stub, topic, partitions=2)
    events = _events(console_broker, f"/topics/{topic}/events", 2)
    assert [name for name, _ in events[:2]] == ["live", "live"]
    values = events[0][1]["values"]
    assert values["p1.end"] == "0" and "records_in" in values


def test_open_live_streams_do_not_hold_up_a_clean_shutdown(broker_factory):
    broker = broker_factory()
    host, port = broker.metrics_address.split(":")
    streams = []
    for path in ("/events/overview", "/events/groups"):
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        streams.append(sock)
    started = time.monotonic()
    try:
        assert broker.stop() == 0
    finally:
        for sock in streams:
            sock.close()
    assert time.monotonic() - started < 5
