"""How the message browser shows bytes and reads times (console/browse.py), with bytes alone."""

from __future__ import annotations

import base64
import json

import pytest

from logstore.errors import InvalidRequestError
from logstore.records import Record
from logstore.server.console import browse


def test_auto_shows_a_json_object_as_json():
    assert browse.show(b'{"a": 1}') == ("json", '{"a": 1}')


def test_long_json_is_indented():
    value = {"dishes": ["soup", "salad", "bread", "pizza"], "note": "no onions, extra pepper please"}
    assert browse.show(json.dumps(value).encode()) == ("json", json.dumps(value, indent=2))


def test_auto_shows_utf8_as_text_and_other_bytes_as_hex():
    assert browse.show("crème brûlée".encode()) == ("text", "crème brûlée")
    assert browse.show(b"\xff\x00") == ("hex", "ff 00")


def test_a_json_number_is_text_under_auto_but_json_when_asked():
    assert browse.show(b"42") == ("text", "42")
    assert browse.show(b"42", "json") == ("json", "42")


def test_a_null_is_shown_as_null():
    assert browse.show(None) == ("null", "null")


def test_long_values_are_cut_and_say_so():
    kind, text = browse.show(b"x" * 10_000, "text")
    assert kind == "text" and text.startswith("x" * browse.MAX_SHOWN_BYTES)
    assert text.endswith(f"(10000 bytes, first {browse.MAX_SHOWN_BYTES} shown)")


def test_times_are_epoch_ms_or_iso_8601_in_utc_by_default():
    assert browse.parse_time("1767000000000") == 1_767_000_000_000
    assert browse.parse_time("2026-01-01T00:00:00") == 1_767_225_600_000
    assert browse.parse_time("2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    with pytest.raises(InvalidRequestError):
        browse.parse_time("tomorrow")


def test_a_download_line_gives_text_or_base64():
    line = json.loads(browse.jsonl(3, Record(7, 1000, b"\xff", b"soup", (("h", b"v"),))))
    assert line == {"partition": 3, "offset": 7, "timestamp": 1000, "key_base64": base64.b64encode(b"\xff").decode(),
                    "value": "soup", "headers": {"h": "v"}}


def test_a_filter_longer_than_the_bound_is_refused():
    with pytest.raises(InvalidRequestError, match="at most 1000 characters"):
        browse.parse_query({"contains": "x" * 1001}, 1)
