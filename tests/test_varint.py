"""Protocol Buffers varints shared by the server's and the client's hand-made messages."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given
from hypothesis import strategies as st

from logstore.varint import decode_varint, encode_varint


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))
    assert decode_varint(b"x" + encoded + b"y", 1) == (value, 1 + len(encoded))


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_matches_protobufs_own_encoding(value: int) -> None:
    # UninterpretedOption.positive_int_value is uint64 field 4: one tag byte, then the varint
    serialized = descriptor_pb2.UninterpretedOption(positive_int_value=value).SerializeToString()
    assert serialized[0] == 4 << 3
    assert encode_varint(value) == serialized[1:]


@given(st.integers(min_value=-(1 << 63), max_value=-1))
def test_a_negative_value_is_its_64_bit_twos_complement(value: int) -> None:
    encoded = encode_varint(value)
    assert encoded == encode_varint(value + (1 << 64))
    assert len(encoded) == 10


def test_a_varint_running_past_the_end_is_refused() -> None:
    with pytest.raises(ValueError, match="past the end"):
        decode_varint(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="past the end"):
        decode_varint(b"", 0)


def test_a_varint_longer_than_ten_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        decode_varint(b"\xff" * 11 + b"\x01", 0)
