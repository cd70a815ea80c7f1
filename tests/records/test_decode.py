"""decode.py: the columnar view (numpy arrays, zero-copy memoryviews) and Record tuples."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.records import Record, decode_columns, decode_records, encode_batch

NOW = 1_700_000_000_000
CODECS = ["none", "zstd", "lz4"]


def two_batches(codec: str = "none", second_codec: str | None = None) -> bytes:
    first = encode_batch(
        [b"a", b"bb", None], [b"k0", None, b"k2"], [NOW, NOW + 1, NOW + 2],
        [None, [("h", b"1")], None], codec=codec, base_offset=0,
    )
    second = encode_batch(
        [b"ccc", b"d"], [b"k3", b"k4"], [NOW + 10, NOW + 5],
        [[("x", None)], None], codec=second_codec or codec, base_offset=3,
    )
    return first + second


def test_columns_give_offsets_and_timestamps_as_int64_arrays():
    columns = decode_columns(two_batches())
    assert isinstance(columns.offsets, np.ndarray) and columns.offsets.dtype == np.int64
    assert columns.offsets.tolist() == [0, 1, 2, 3, 4]
    assert columns.timestamps.dtype == np.int64
    assert columns.timestamps.tolist() == [NOW, NOW + 1, NOW + 2, NOW + 10, NOW + 5]
    assert columns.value_lengths.tolist() == [1, 2, -1, 3, 1]
    assert columns.key_lengths.tolist() == [2, -1, 2, 2, 2]
    assert len(columns) == 5


def test_uncompressed_values_are_zero_copy_views_of_the_buffer():
    buffer = bytearray(two_batches())
    columns = decode_columns(buffer)
    value = columns.value(0)
    assert isinstance(value, memoryview) and value.obj is buffer
    position = int(columns.value_positions[0])
    buffer[position] = ord("Z")  # the view sees a change to the buffer: nothing was copied
    assert bytes(value) == b"Z"
    assert bytes(columns.values()[0]) == b"Z"


def test_views_of_a_memoryview_share_its_memory():
    data = bytearray(two_batches())
    columns = decode_columns(memoryview(data)[0:])
    key = columns.key(3)
    assert bytes(key) == b"k3"
    data[int(columns.key_positions[3])] = ord("Q")
    assert bytes(key) == b"Q3"


@pytest.mark.parametrize("codec", CODECS)
def test_value_key_and_headers_accessors(codec):
    columns = decode_columns(two_batches(codec))
    assert [None if v is None else bytes(v) for v in columns.values()] == [b"a", b"bb", None, b"ccc", b"d"]
    assert [None if k is None else bytes(k) for k in columns.keys()] == [b"k0", None, b"k2", b"k3", b"k4"]
    assert columns.value(2) is None
    assert columns.key(1) is None
    assert columns.headers(0) == ()
    assert columns.headers(1) == (("h", b"1"),)
    assert columns.headers(3) == (("x", None),)
    assert columns.values_bytes() == [b"a", b"bb", None, b"ccc", b"d"]


@pytest.mark.parametrize(("codec", "second"), [("none", "zstd"), ("lz4", "none"), ("zstd", "lz4")])
def test_batches_of_mixed_codecs_decode_together(codec, second):
    records = decode_records(two_batches(codec, second))
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert [r.value for r in records] == [b"a", b"bb", None, b"ccc", b"d"]
    assert [r.key for r in records] == [b"k0", None, b"k2", b"k3", b"k4"]
    assert [r.headers for r in records] == [(), (("h", b"1"),), (), (("x", None),), ()]


@pytest.mark.parametrize("codec", CODECS)
def test_min_offset_drops_earlier_records_of_the_first_batch(codec):
    columns = decode_columns(two_batches(codec), min_offset=1)
    assert columns.offsets.tolist() == [1, 2, 3, 4]
    assert [r.key for r in columns.records()] == [None, b"k2", b"k3", b"k4"]
    assert [r.value for r in columns.records()] == [b"bb", None, b"ccc", b"d"]
    assert columns.headers(0) == (("h", b"1"),)
    assert columns.key_lengths.tolist() == [-1, 2, 2, 2]


def test_min_offset_inside_the_second_batch():
    records = decode_records(two_batches(), min_offset=4)
    assert [(r.offset, r.key, r.value) for r in records] == [(4, b"k4", b"d")]


def test_min_offset_past_every_record_gives_nothing():
    columns = decode_columns(two_batches(), min_offset=5)
    assert len(columns) == 0
    assert columns.records() == []


def test_min_offset_in_a_gap_starts_at_the_next_record():
    from logstore.records import encode_columns

    batch = encode_columns(
        value_lengths=np.array([1, 1], dtype=np.int32), values=b"ab",
        offset_deltas=np.array([0, 5], dtype=np.int32), timestamps=NOW,
    )
    assert [r.offset for r in decode_records(batch, min_offset=2)] == [5]


def test_slice_of_a_slice_keeps_the_right_records():
    columns = decode_columns(two_batches())
    inner = columns.slice(1).slice(1, 3)
    assert inner.offsets.tolist() == [2, 3]
    assert [r.value for r in inner.records()] == [None, b"ccc"]
    assert [None if k is None else bytes(k) for k in inner.keys()] == [b"k2", b"k3"]


def test_records_builds_the_given_named_tuple_with_a_prefix():
    class Fetched(NamedTuple):
        topic: str
        partition: int
        offset: int
        timestamp: int
        key: bytes | None
        value: bytes | None
        headers: tuple

    fetched = decode_columns(two_batches()).records(Fetched, "orders", 2)
    assert fetched[3] == Fetched("orders", 2, 3, NOW + 10, b"k3", b"ccc", (("x", None),))


def test_records_are_bytes_not_views():
    record = decode_records(two_batches())[0]
    assert type(record) is Record
    assert type(record.value) is bytes and type(record.key) is bytes


def test_iterating_columns_yields_records():
    assert [r.offset for r in decode_columns(two_batches())] == [0, 1, 2, 3, 4]


def test_control_batches_are_skipped_unless_asked_for():
    buffer = two_batches() + encode_batch([b"commit"], base_offset=5, control=True)
    assert [r.offset for r in decode_records(buffer)] == [0, 1, 2, 3, 4]
    assert decode_records(buffer, skip_control=False)[-1].value == b"commit"


def test_include_drops_batches():
    records = decode_records(two_batches(), include=lambda header: header.base_offset != 0)
    assert [r.offset for r in records] == [3, 4]


def test_a_partial_trailing_batch_is_ignored():
    buffer = two_batches()
    extra = encode_batch([b"tail"], base_offset=5)
    assert [r.offset for r in decode_records(buffer + extra[:-3])] == [0, 1, 2, 3, 4]


def test_empty_buffer_decodes_to_nothing():
    columns = decode_columns(b"")
    assert len(columns) == 0 and columns.values() == [] and columns.records() == []


def test_every_record_the_same_size_and_many_batches():
    buffer = b"".join(
        encode_batch([b"%04d" % (b * 3 + i) for i in range(3)], base_offset=b * 3, timestamps=NOW)
        for b in range(50)
    )
    records = decode_records(buffer)
    assert [r.offset for r in records] == list(range(150))
    assert [r.value for r in records] == [b"%04d" % i for i in range(150)]



@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("sizes", ["same", "mixed"])
def test_records_from_a_memoryview_are_the_bytes_records(keyed, sizes):
    """A fetched response is a view of the received message: records built over it are the
    same bytes-valued tuples as over a bytes copy (same-size values are read from the view)."""
    values = [b"ab", b"cd", b"ef"] if sizes == "same" else [b"a", b"bcd", None]
    keys = [b"k0", None, b"k2"] if keyed else None
    buffer = b"!" + encode_batch(values, keys, timestamps=NOW) + encode_batch(
        values, keys, base_offset=3, timestamps=NOW)
    view = memoryview(buffer)[1:]
    records = decode_columns(view).records()
    assert records == decode_columns(bytes(view)).records()
    assert [r.value for r in records] == values * 2
    assert all(type(r.value) is bytes for r in records if r.value is not None)
    assert decode_columns(view).values_bytes() == values * 2


def test_same_size_values_and_keys_keep_their_zero_bytes():
    values = [b"\x00\x00", b"a\x00", b"\x00b"]
    buffer = encode_batch(values, keys=[b"\x00", b"\x01", b"\x00"], timestamps=NOW)
    buffer += encode_batch([b"\x00\x00"], keys=[b"\x00"], base_offset=3, timestamps=NOW)
    records = decode_records(buffer)
    assert [r.value for r in records] == [*values, b"\x00\x00"]
    assert [r.key for r in records] == [b"\x00", b"\x01", b"\x00", b"\x00"]
    assert all(type(r.value) is bytes and type(r.key) is bytes for r in records)

@settings(max_examples=80, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.sampled_from(CODECS),
            st.lists(
                st.tuples(
                    st.one_of(st.none(), st.binary(max_size=6)),
                    st.one_of(st.none(), st.binary(max_size=6)),
                    st.one_of(st.none(), st.just([("h", b"v")])),
                ),
                min_size=1,
                max_size=5,
            ),
        ),
        min_size=1,
        max_size=5,
    ),
    min_offset=st.integers(0, 30),
)
def test_min_offset_over_many_batches_matches_a_list_model(batches, min_offset):
    buffer = b""
    model = []
    offset = 0
    for codec, records in batches:
        keys = [r[0] for r in records]
        values = [r[1] for r in records]
        headers = [r[2] for r in records]
        stamp = NOW + offset  # one timestamp per batch
        buffer += encode_batch(values, keys, stamp, headers, codec=codec, base_offset=offset)
        for key, value, header in records:
            model.append(Record(offset, stamp, key, value, tuple(header or ())))
            offset += 1
    expected = [r for r in model if r.offset >= min_offset]
    columns = decode_columns(buffer, min_offset=min_offset)
    assert columns.records() == expected
    assert [None if v is None else bytes(v) for v in columns.values()] == [r.value for r in expected]
    assert [None if k is None else bytes(k) for k in columns.keys()] == [r.key for r in expected]


def test_batch_starts_follow_slices_and_the_min_offset() -> None:
    data = b"".join(encode_batch([b"%d" % i for i in range(4)], base_offset=b * 4) for b in range(3))
    columns = decode_columns(data)
    assert columns.batch_starts.tolist() == [0, 4, 8]
    assert columns.slice(2, 10).batch_starts.tolist() == [0, 2, 6]
    assert decode_columns(data, min_offset=5).batch_starts.tolist() == [0, 3]


def test_dense_same_timestamp_batches_read_offsets_and_timestamps_from_their_headers() -> None:
    # keyless, one timestamp per batch: no offset, timestamp or key column is stored
    first = encode_batch([b"a", b"b"], timestamps=NOW, base_offset=10)
    second = encode_batch([b"c", b"d", b"e"], timestamps=NOW + 7, base_offset=12)
    after_gap = encode_batch([b"f"], timestamps=NOW + 9, base_offset=20)  # e.g. a marker between
    columns = decode_columns(first + second + after_gap)
    assert columns.offsets.tolist() == [10, 11, 12, 13, 14, 20]
    assert columns.timestamps.tolist() == [NOW, NOW, NOW + 7, NOW + 7, NOW + 7, NOW + 9]
    assert columns.offsets.dtype == columns.timestamps.dtype == np.int64
    assert [bytes(v) for v in columns.values()] == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert columns.key_lengths.tolist() == [-1] * 6
    assert columns.headers_lengths.tolist() == [0] * 6
    assert columns.keys() == [None] * 6
    assert columns.slice(1, 4).records() == [
        Record(11, NOW, None, b"b", ()), Record(12, NOW + 7, None, b"c", ()),
        Record(13, NOW + 7, None, b"d", ()),
    ]
    assert decode_columns(first + second).offsets.tolist() == [10, 11, 12, 13, 14]
    assert decode_columns(second + after_gap, min_offset=14).offsets.tolist() == [14, 20]
