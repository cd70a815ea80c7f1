"""batch.py: header parsing and validation. Every field that does not add up is caught by name."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.errors import CorruptBatchError
from logstore.records import (
    HEADER_SIZE,
    encode_batch,
    encode_columns,
    encode_headers,
    iter_headers,
    iter_spans,
    read_header,
    validate_batch,
    validate_batches,
    walk_positions,
)
from logstore.records.layout import (
    ASSIGNED_PREFIX_SIZE,
    ATTRIBUTES_POSITION,
    BATCH_LENGTH_POSITION,
    CRC_POSITION,
    CRC_START,
    LAST_OFFSET_DELTA_POSITION,
    MAGIC_POSITION,
    MAX_TIMESTAMP_POSITION,
    RECORD_COUNT_POSITION,
)

NOW = 1_700_000_000_000
COLUMNS = HEADER_SIZE  # the record columns start right after the header (uncompressed)


def valid_batch(count: int = 3, **options) -> bytearray:
    """A batch carrying all five columns (explicit offset deltas, keys, timestamps, headers)."""
    values = [b"value-%d" % i for i in range(count)]
    keys = [b"key-%d" % i for i in range(count)]
    headers = [encode_headers([("h", b"%d" % i)]) for i in range(count)]
    return bytearray(
        encode_columns(
            value_lengths=np.array([len(v) for v in values], dtype=np.int32),
            values=b"".join(values),
            key_lengths=np.array([len(k) for k in keys], dtype=np.int32),
            keys=b"".join(keys),
            timestamps=np.array([NOW + i for i in range(count)], dtype=np.int64),
            headers_lengths=np.array([len(h) for h in headers], dtype=np.int32),
            headers=b"".join(headers),
            offset_deltas=np.arange(count, dtype=np.int32),
            **options,
        )
    )


def reseal(batch: bytearray) -> bytearray:
    """Recompute the crc, so that only the field a test changed is wrong."""
    struct.pack_into("<I", batch, CRC_POSITION, crc32c(bytes(batch[CRC_START:])))
    return batch


def put(batch: bytearray, fmt: str, position: int, value: int) -> bytearray:
    struct.pack_into(fmt, batch, position, value)
    return reseal(batch)


def column(index: int, record: int, count: int) -> int:
    """Position of record ``record``'s entry in column ``index`` of an uncompressed batch."""
    return COLUMNS + (index * count + record) * 4


# -- reading headers -------------------------------------------------------------------------------


def test_read_header_parses_every_field_at_its_position():
    batch = valid_batch(base_offset=5)
    header = read_header(bytes(8) + batch, 8)
    assert header.position == 8
    assert header.base_offset == 5
    assert header.batch_length == len(batch)
    assert header.end_position == 8 + len(batch)
    assert header.record_count == 3


def test_read_header_of_a_cut_short_header_raises():
    with pytest.raises(CorruptBatchError, match="cut short") as caught:
        read_header(valid_batch()[: HEADER_SIZE - 1])
    assert caught.value.position == 0


def test_iter_headers_walks_batches_and_stops_at_a_partial_one():
    first, second = valid_batch(base_offset=0), valid_batch(base_offset=3)
    buffer = bytes(first + second) + bytes(second[:-1])
    assert [h.base_offset for h in iter_headers(buffer)] == [0, 3]
    assert [p for p, _, _ in walk_positions(buffer, 0, len(buffer))] == [0, len(first)]


def test_iter_spans_gives_each_batch_its_offsets_length_and_attributes():
    first, second = valid_batch(base_offset=0), encode_batch([b"c"], base_offset=3, control=True)
    buffer = bytes(first) + bytes(second) + bytes(second[:-1])
    header = read_header(second)
    assert list(iter_spans(buffer)) == [
        (0, 0, 3, len(first), read_header(first).attributes),
        (len(first), 3, 4, len(second), header.attributes),
    ]
    assert header.is_control and list(iter_spans(buffer, len(first), len(first) + len(second)))[0][1] == 3


def test_walk_positions_stops_at_a_length_shorter_than_a_header():
    buffer = put(valid_batch(), "<i", BATCH_LENGTH_POSITION, 10)
    assert list(walk_positions(buffer, 0, len(buffer))) == []


# -- validation: one test per field ----------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_a_valid_batch_passes_deep_validation(codec):
    batch = valid_batch(codec=codec)
    header = validate_batch(batch)
    assert header.record_count == 3
    assert validate_batches(bytes(batch) * 2)[1].position == len(batch)


def test_batch_length_shorter_than_the_header_is_corrupt():
    with pytest.raises(CorruptBatchError, match="shorter than the header"):
        validate_batch(put(valid_batch(), "<i", BATCH_LENGTH_POSITION, HEADER_SIZE - 1))


def test_batch_length_running_past_the_buffer_is_corrupt():
    batch = valid_batch()
    with pytest.raises(CorruptBatchError, match="runs past"):
        validate_batch(put(batch, "<i", BATCH_LENGTH_POSITION, len(batch) + 1))


def test_negative_batch_length_is_corrupt():
    with pytest.raises(CorruptBatchError, match="batch_length"):
        validate_batch(put(valid_batch(), "<i", BATCH_LENGTH_POSITION, -1))


def test_batch_cut_short_is_corrupt():
    batch = valid_batch()
    with pytest.raises(CorruptBatchError, match="runs past"):
        validate_batch(batch[:-1])


def test_batch_length_that_drops_trailing_bytes_is_corrupt():
    batch = valid_batch()
    batch[BATCH_LENGTH_POSITION : BATCH_LENGTH_POSITION + 4] = struct.pack("<i", len(batch) - 4)
    with pytest.raises(CorruptBatchError):  # the crc no longer covers the same bytes
        validate_batches(batch)


def test_crc_mismatch_is_corrupt():
    batch = valid_batch()
    batch[CRC_POSITION] ^= 0x01
    with pytest.raises(CorruptBatchError, match="crc32c"):
        validate_batch(batch)


def test_a_changed_record_byte_breaks_the_crc():
    batch = valid_batch()
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="crc32c"):
        validate_batch(batch, deep=False)


def test_unsupported_magic_is_corrupt():
    with pytest.raises(CorruptBatchError, match="magic"):
        validate_batch(put(valid_batch(), "<B", MAGIC_POSITION, 2))


def test_unknown_attribute_bits_are_corrupt():
    with pytest.raises(CorruptBatchError, match="attribute"):
        validate_batch(put(valid_batch(), "<H", ATTRIBUTES_POSITION, 0x8000))


def test_unknown_codec_is_corrupt():
    with pytest.raises(CorruptBatchError, match="codec"):
        validate_batch(put(valid_batch(), "<H", ATTRIBUTES_POSITION, 0x0003))


def test_negative_record_count_is_corrupt():
    with pytest.raises(CorruptBatchError, match="record_count"):
        validate_batch(put(valid_batch(), "<i", RECORD_COUNT_POSITION, -1))


def test_record_count_that_does_not_fit_the_bytes_is_corrupt():
    batch = valid_batch()
    struct.pack_into("<i", batch, LAST_OFFSET_DELTA_POSITION, 999)
    with pytest.raises(CorruptBatchError, match="does not fit"):
        validate_batch(put(batch, "<i", RECORD_COUNT_POSITION, 1000))


def test_record_count_larger_than_the_columns_is_corrupt():
    batch = valid_batch(count=3)
    struct.pack_into("<i", batch, LAST_OFFSET_DELTA_POSITION, 3)
    with pytest.raises(CorruptBatchError):
        validate_batch(put(batch, "<i", RECORD_COUNT_POSITION, 4))


def test_record_count_smaller_than_the_columns_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError):
        validate_batch(put(batch, "<i", RECORD_COUNT_POSITION, 2))


def test_last_offset_delta_below_the_record_count_is_corrupt():
    with pytest.raises(CorruptBatchError, match="last_offset_delta"):
        validate_batch(put(valid_batch(count=3), "<i", LAST_OFFSET_DELTA_POSITION, 1))


def test_last_offset_delta_not_matching_the_last_record_is_corrupt():
    with pytest.raises(CorruptBatchError, match="last_offset_delta"):
        validate_batch(put(valid_batch(count=3), "<i", LAST_OFFSET_DELTA_POSITION, 5))


def test_offset_deltas_not_increasing_are_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="strictly increasing"):
        validate_batch(put(batch, "<i", column(0, 1, 3), 0))


def test_negative_first_offset_delta_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="offset deltas"):
        validate_batch(put(batch, "<i", column(0, 0, 3), -1))


def test_value_length_longer_than_the_bytes_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="add up"):
        validate_batch(put(batch, "<i", column(3, 0, 3), 8))


def test_key_length_shorter_than_the_bytes_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="add up"):
        validate_batch(put(batch, "<i", column(2, 2, 3), 4))


def test_key_length_below_minus_one_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="negative"):
        validate_batch(put(batch, "<i", column(2, 0, 3), -2))


def test_negative_headers_length_is_corrupt():
    batch = valid_batch(count=3)
    with pytest.raises(CorruptBatchError, match="negative"):
        validate_batch(put(batch, "<i", column(4, 0, 3), -1))


def test_max_timestamp_not_matching_the_records_is_corrupt():
    with pytest.raises(CorruptBatchError, match="max_timestamp"):
        validate_batch(put(valid_batch(), "<q", MAX_TIMESTAMP_POSITION, NOW + 99))


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_section_that_does_not_decompress_is_corrupt(codec):
    batch = valid_batch(codec=codec)
    batch[HEADER_SIZE + 6 :] = bytes(len(batch) - HEADER_SIZE - 6)  # zero the frame's body
    with pytest.raises(CorruptBatchError):
        validate_batch(reseal(batch))


def test_shallow_validation_skips_the_record_columns():
    batch = put(valid_batch(), "<q", MAX_TIMESTAMP_POSITION, NOW + 99)
    assert validate_batch(batch, deep=False).max_timestamp == NOW + 99


def test_corrupt_batch_error_names_its_position():
    good = valid_batch()
    bad = valid_batch()
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError) as caught:
        validate_batches(bytes(good + bad))
    assert caught.value.position == len(good)
    assert caught.value.metadata["position"] == str(len(good))


def test_empty_payload_is_corrupt():
    with pytest.raises(CorruptBatchError, match="no record batches"):
        validate_batches(b"")


def test_trailing_bytes_after_the_last_batch_are_corrupt():
    with pytest.raises(CorruptBatchError):
        validate_batches(bytes(valid_batch()) + b"\x00" * 10)


def test_empty_batch_carrying_record_bytes_is_corrupt():
    batch = valid_batch(count=1)
    struct.pack_into("<i", batch, LAST_OFFSET_DELTA_POSITION, 0)
    with pytest.raises(CorruptBatchError, match="empty batch"):
        validate_batch(put(batch, "<i", RECORD_COUNT_POSITION, 0))


# -- random damage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_flipped_bytes_are_caught_unless_they_are_broker_owned(codec, data):
    batch = valid_batch(count=4, codec=codec)
    positions = data.draw(
        st.lists(st.integers(0, len(batch) - 1), min_size=1, max_size=4, unique=True)
    )
    for position in positions:
        batch[position] ^= data.draw(st.integers(1, 255))
    try:
        validate_batches(bytes(batch))
    except CorruptBatchError:
        return
    assert all(p < ASSIGNED_PREFIX_SIZE for p in positions), positions


# -- omitted columns (attribute bits 6-9) ----------------------------------------------------


def test_a_batch_of_plain_values_carries_only_the_value_length_column():
    batch = encode_batch([b"abc", b"de"], timestamps=NOW)
    header = validate_batch(batch)
    assert header.attributes & 0x3C0 == 0x3C0  # dense offsets, one timestamp, no keys, no headers
    assert len(batch) == HEADER_SIZE + 2 * 4 + 5


def test_all_five_columns_are_kept_when_each_says_something():
    assert read_header(valid_batch()).attributes & 0x3C0 == 0


def test_dense_offsets_with_a_wrong_last_offset_delta_are_corrupt():
    batch = bytearray(encode_batch([b"a", b"b"], timestamps=NOW))
    with pytest.raises(CorruptBatchError, match="dense offsets"):
        validate_batch(reseal(put_raw(batch, "<i", LAST_OFFSET_DELTA_POSITION, 5)))


def test_one_timestamp_flag_with_a_different_max_timestamp_is_corrupt():
    batch = bytearray(encode_batch([b"a", b"b"], timestamps=NOW))
    with pytest.raises(CorruptBatchError, match="one timestamp"):
        validate_batch(reseal(put_raw(batch, "<q", MAX_TIMESTAMP_POSITION, NOW + 1)))


def put_raw(batch: bytearray, fmt: str, position: int, value: int) -> bytearray:
    struct.pack_into(fmt, batch, position, value)
    return batch
