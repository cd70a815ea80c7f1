"""encode.py: lists and columns in, batch bytes out; every batch decodes back to what went in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.records import (
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_ZSTD,
    HEADER_SIZE,
    MAGIC,
    decode_records,
    encode_batch,
    encode_columns,
    read_header,
    validate_batch,
)

CODECS = ["none", "zstd", "lz4"]
NOW = 1_700_000_000_000

small_bytes = st.binary(max_size=40)
header_lists = st.one_of(
    st.none(),
    st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), small_bytes)), max_size=3),
)
records = st.lists(
    st.tuples(
        st.one_of(st.none(), small_bytes),  # key
        st.one_of(st.none(), small_bytes),  # value
        header_lists,
        st.integers(min_value=NOW - 2**30, max_value=NOW + 2**30 - 1),  # spread < 2**31
    ),
    min_size=1,
    max_size=20,
)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=60, deadline=None)
@given(records=records)
def test_round_trip_of_keys_values_headers_nulls_and_timestamps(codec, records):
    keys = [r[0] for r in records]
    values = [r[1] for r in records]
    headers = [r[2] for r in records]
    timestamps = [r[3] for r in records]
    batch = encode_batch(values, keys, timestamps, headers, codec=codec, base_offset=10)
    validate_batch(batch)
    decoded = decode_records(batch)
    assert [r.offset for r in decoded] == list(range(10, 10 + len(records)))
    assert [r.key for r in decoded] == keys
    assert [r.value for r in decoded] == values
    assert [r.timestamp for r in decoded] == timestamps
    assert [r.headers for r in decoded] == [tuple(h or ()) for h in headers]


@pytest.mark.parametrize("codec", CODECS)
def test_null_keys_and_tombstones_decode_as_none(codec):
    batch = encode_batch([None, b"v", None], [b"k", None, None], NOW, codec=codec)
    decoded = decode_records(batch)
    assert [(r.key, r.value) for r in decoded] == [(b"k", None), (None, b"v"), (None, None)]


@pytest.mark.parametrize("codec", CODECS)
def test_empty_keys_and_values_are_not_nulls(codec):
    decoded = decode_records(encode_batch([b""], [b""], NOW, codec=codec))
    assert (decoded[0].key, decoded[0].value) == (b"", b"")


def test_one_timestamp_applies_to_every_record():
    batch = encode_batch([b"a", b"b"], timestamps=NOW)
    header = read_header(batch)
    assert [r.timestamp for r in decode_records(batch)] == [NOW, NOW]
    assert header.base_timestamp == header.max_timestamp == NOW


def test_max_timestamp_is_the_largest_not_the_last():
    header = read_header(encode_batch([b"a", b"b", b"c"], timestamps=[NOW, NOW + 50, NOW + 7]))
    assert header.base_timestamp == NOW
    assert header.max_timestamp == NOW + 50


def test_timestamps_more_than_2_31_ms_apart_are_rejected():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        encode_batch([b"a", b"b"], timestamps=[NOW, NOW + 2**31])


def test_timestamp_count_must_match_record_count():
    with pytest.raises(ValueError, match="timestamps"):
        encode_batch([b"a", b"b"], timestamps=[NOW])


def test_key_count_must_match_value_count():
    with pytest.raises(ValueError):
        encode_batch([b"a", b"b"], keys=[b"k"])


def test_headers_count_must_match_value_count():
    with pytest.raises(ValueError, match="headers"):
        encode_batch([b"a", b"b"], headers=[[("h", b"1")]])


def test_a_batch_needs_at_least_one_record():
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([])


def test_unknown_codec_name_is_rejected():
    with pytest.raises(ValueError, match="unknown codec"):
        encode_batch([b"a"], codec="snappy")


@pytest.mark.parametrize(("name", "value"), [("none", CODEC_NONE), ("zstd", CODEC_ZSTD), ("lz4", CODEC_LZ4)])
def test_codec_is_recorded_in_the_attributes(name, value):
    assert read_header(encode_batch([b"a"], codec=name)).codec == value
    assert read_header(encode_batch([b"a"], codec=value)).codec == value


def test_header_fields_are_written_as_given():
    batch = encode_batch(
        [b"a", b"b", b"c"],
        timestamps=NOW,
        base_offset=42,
        producer_id=7,
        producer_epoch=3,
        base_sequence=100,
        transactional=True,
    )
    header = read_header(batch)
    assert header.base_offset == 42
    assert header.batch_length == len(batch)
    assert header.leader_epoch == 0
    assert header.magic == MAGIC
    assert header.record_count == 3
    assert header.last_offset_delta == 2
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 3, 100)
    assert header.is_transactional and not header.is_control
    assert header.last_sequence == 102
    assert (header.last_offset, header.next_offset) == (44, 45)


def test_control_flag_is_set_and_control_batches_are_skipped_by_default():
    batch = encode_batch([b"marker"], control=True)
    assert read_header(batch).is_control
    assert decode_records(batch) == []
    assert [r.value for r in decode_records(batch, skip_control=False)] == [b"marker"]


def test_uncompressed_batch_length_is_header_plus_columns_plus_bytes():
    batch = encode_batch([b"abc", b"de"], [b"k", None], NOW, [[("h", b"x")], None])
    headers_bytes = 2 + 1 + 4 + 1  # key length, key, value length, value
    columns = 3  # key, value and headers lengths; offsets are dense and the timestamp is one
    assert len(batch) == HEADER_SIZE + 2 * 4 * columns + 1 + 5 + headers_bytes


@pytest.mark.parametrize("codec", CODECS)
def test_encode_columns_with_offset_gaps_keeps_the_offsets(codec):
    batch = encode_columns(
        value_lengths=np.array([1, 2, -1], dtype=np.int32),
        values=b"abc",
        key_lengths=np.array([1, 1, 1], dtype=np.int32),
        keys=b"xyz",
        timestamps=np.array([NOW, NOW + 1, NOW + 2]),
        offset_deltas=np.array([0, 3, 9], dtype=np.int32),
        codec=codec,
        base_offset=100,
    )
    header = validate_batch(batch)
    assert header.last_offset_delta == 9 and header.next_offset == 110
    decoded = decode_records(batch)
    assert [(r.offset, r.key, r.value) for r in decoded] == [
        (100, b"x", b"a"),
        (103, b"y", b"bc"),
        (109, b"z", None),
    ]


def test_encode_columns_and_encode_batch_agree():
    from_lists = encode_batch([b"a", None, b"cc"], [None, b"k", b"kk"], NOW)
    from_columns = encode_columns(
        value_lengths=np.array([1, -1, 2], dtype=np.int32),
        values=b"acc",
        key_lengths=np.array([-1, 1, 2], dtype=np.int32),
        keys=b"kkk",
        timestamps=NOW,
    )
    assert from_lists == from_columns


def test_bytearray_and_memoryview_values_are_accepted():
    batch = encode_batch([bytearray(b"ab"), memoryview(b"cd")], keys=[memoryview(b"k"), b"j"])
    assert [(r.key, r.value) for r in decode_records(batch)] == [(b"k", b"ab"), (b"j", b"cd")]


def test_without_timestamps_records_get_the_current_time():
    from logstore.records import now_ms

    before = now_ms()
    header = read_header(encode_batch([b"a"]))
    after = now_ms()
    assert before <= header.base_timestamp <= after
