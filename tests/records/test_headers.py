"""headers.py: one record's headers, and corrupt header bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.errors import CorruptBatchError
from logstore.records import decode_headers, encode_headers
from logstore.records.headers import normalize_headers


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=10), st.one_of(st.none(), st.binary(max_size=20))), max_size=5))
def test_round_trip(headers):
    assert decode_headers(encode_headers(headers)) == tuple(headers)


def test_no_headers_encode_to_no_bytes():
    assert encode_headers(None) == b""
    assert encode_headers([]) == b""
    assert decode_headers(b"") == ()


def test_string_values_and_bytes_keys_are_encoded():
    assert decode_headers(encode_headers([(b"k", "v"), ("\u00e9", "\u00e8")])) == (
        ("k", b"v"),
        ("\u00e9", "\u00e8".encode()),
    )


def test_dict_items_are_accepted():
    assert decode_headers(encode_headers({"a": b"1", "b": None}.items())) == (("a", b"1"), ("b", None))


def test_layout_is_key_length_key_value_length_value():
    assert encode_headers([("ab", b"xyz")]) == struct.pack("<H", 2) + b"ab" + struct.pack("<i", 3) + b"xyz"
    assert encode_headers([("a", None)]) == struct.pack("<H", 1) + b"a" + struct.pack("<i", -1)


def test_key_longer_than_65535_bytes_is_rejected():
    with pytest.raises(ValueError, match="header key"):
        encode_headers([("k" * 65536, b"")])


def test_cut_short_key_length_is_corrupt():
    with pytest.raises(CorruptBatchError, match="key length"):
        decode_headers(b"\x01")


def test_key_running_past_the_headers_is_corrupt():
    with pytest.raises(CorruptBatchError, match="key runs past"):
        decode_headers(struct.pack("<H", 10) + b"abc")


def test_value_running_past_the_headers_is_corrupt():
    with pytest.raises(CorruptBatchError, match="value runs past"):
        decode_headers(struct.pack("<H", 1) + b"a" + struct.pack("<i", 5) + b"ab")


def test_negative_value_length_other_than_minus_one_is_corrupt():
    with pytest.raises(CorruptBatchError, match="value runs past"):
        decode_headers(struct.pack("<H", 1) + b"a" + struct.pack("<i", -2))


def test_key_that_is_not_utf8_is_corrupt():
    with pytest.raises(CorruptBatchError, match="UTF-8"):
        decode_headers(struct.pack("<H", 1) + b"\xff" + struct.pack("<i", -1))


def test_decode_accepts_a_memoryview():
    data = b"xx" + encode_headers([("a", b"b")])
    assert decode_headers(memoryview(data)[2:]) == (("a", b"b"),)


def test_normalize_headers_turns_dicts_into_pairs():
    assert normalize_headers(None) is None
    assert normalize_headers({"a": b"1"}) == [("a", b"1")]
    assert normalize_headers((("a", "x"),)) == [("a", "x")]
