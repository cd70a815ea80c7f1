"""Building record batches: columns in, batch bytes out, with numpy and no per-record Python loop.

``encode_columns`` is the core: it takes the record section already in columnar form (length arrays
plus concatenated bytes) and adds the header and crc. ``encode_batch`` accepts Python lists (what a
producer accumulates) and turns them into columns with C-level ``map(len, ...)`` and ``b"".join``.
See ``layout.py`` for the byte layout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from crc32c import crc32c

from logstore.records.compression import compress
from logstore.records.headers import encode_headers
from logstore.records.layout import (
    CODEC_NONE,
    CODECS,
    COLUMN_DTYPE,
    CONTROL_FLAG,
    CRC_START,
    DENSE_OFFSETS_FLAG,
    HEADER_SIZE,
    HEADER_STRUCT,
    MAGIC,
    MAX_BATCH_LENGTH,
    NO_HEADERS_FLAG,
    NO_KEYS_FLAG,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    SAME_TIMESTAMP_FLAG,
    TRANSACTIONAL_FLAG,
)

_I4_MIN = -(1 << 31)
_I4_MAX = (1 << 31) - 1

BytesLike = bytes | bytearray | memoryview


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def codec_id(codec: str | int) -> int:
    if isinstance(codec, int):
        return codec
    try:
        return CODECS[codec]
    except KeyError:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(CODECS)}") from None


def encode_columns(
    *,
    value_lengths: np.ndarray,
    values: BytesLike,
    key_lengths: np.ndarray | None = None,
    keys: BytesLike = b"",
    timestamps: np.ndarray | int | None = None,
    headers_lengths: np.ndarray | None = None,
    headers: BytesLike = b"",
    offset_deltas: np.ndarray | None = None,
    codec: str | int = CODEC_NONE,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    """Encode one batch from columns. Lengths are -1 for null keys and values.

    ``timestamps`` is one int for every record, an int64 array, or None for now. ``values``,
    ``keys`` and ``headers`` are the concatenated non-null bytes in record order.
    """
    count = len(value_lengths)
    if count == 0:
        raise ValueError("a batch holds at least one record")
    codec_value = codec_id(codec)
    attributes = codec_value
    if transactional:
        attributes |= TRANSACTIONAL_FLAG
    if control:
        attributes |= CONTROL_FLAG
    # Only columns that say something are written; an attribute bit marks each one left out.
    rows: list[Any] = []
    if offset_deltas is None:
        attributes |= DENSE_OFFSETS_FLAG
        last_offset_delta = count - 1
    else:
        offset_deltas = np.asarray(offset_deltas, dtype=COLUMN_DTYPE)
        if len(offset_deltas) != count:
            raise ValueError(f"{len(offset_deltas)} offset deltas for {count} records")
        last_offset_delta = int(offset_deltas[-1])
        rows.append(offset_deltas)
    if timestamps is None:
        timestamps = now_ms()
    if isinstance(timestamps, (int, np.integer)):
        base_timestamp = max_timestamp = int(timestamps)
        attributes |= SAME_TIMESTAMP_FLAG
    else:
        stamps = np.asarray(timestamps, dtype=np.int64)
        if len(stamps) != count:
            raise ValueError(f"{len(stamps)} timestamps for {count} records")
        base_timestamp = int(stamps[0])
        deltas = stamps - base_timestamp
        low, high = int(deltas.min()), int(deltas.max())
        if low < _I4_MIN or high > _I4_MAX:
            raise ValueError("timestamps in one batch must lie within 2**31 ms of the first")
        max_timestamp = base_timestamp + high
        if low == high == 0:
            attributes |= SAME_TIMESTAMP_FLAG
        else:
            rows.append(deltas.astype(COLUMN_DTYPE))
    if key_lengths is None or (len(keys) == 0 and int(np.max(key_lengths)) < 0):
        attributes |= NO_KEYS_FLAG
        keys = b""
    else:
        rows.append(np.asarray(key_lengths, dtype=COLUMN_DTYPE))
    rows.append(np.asarray(value_lengths, dtype=COLUMN_DTYPE))
    if headers_lengths is None or (len(headers) == 0 and not np.any(headers_lengths)):
        attributes |= NO_HEADERS_FLAG
        headers = b""
    else:
        rows.append(np.asarray(headers_lengths, dtype=COLUMN_DTYPE))
    columns = rows[0] if len(rows) == 1 else np.concatenate(rows)

    if codec_value == CODEC_NONE:
        parts: list[Any] = [columns, keys, values, headers]
        section_length = columns.nbytes + len(keys) + len(values) + len(headers)
    else:
        section = compress(codec_value, b"".join([columns.tobytes(), keys, values, headers]))
        parts = [section]
        section_length = len(section)
    batch_length = HEADER_SIZE + section_length
    if batch_length > MAX_BATCH_LENGTH:
        raise ValueError(f"batch of {batch_length} bytes exceeds {MAX_BATCH_LENGTH}")
    header = HEADER_STRUCT.pack(
        base_offset,
        batch_length,
        0,
        0,
        MAGIC,
        0,
        attributes,
        last_offset_delta,
        count,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        0,
        base_sequence,
    )
    crc = crc32c(memoryview(header)[CRC_START:])
    for part in parts:
        crc = crc32c(part, crc)
    return b"".join([header[:16], crc.to_bytes(4, "little"), header[CRC_START:], *parts])


def _lengths_and_blob(
    items: Sequence[BytesLike | None] | None, count: int
) -> tuple[np.ndarray | None, BytesLike]:
    """Lengths (-1 for None) and the concatenation, without a per-record Python loop."""
    if items is None:
        return None, b""
    if len(items) != count:
        raise ValueError(f"{len(items)} keys/values for {count} records")
    try:
        return np.fromiter(map(len, items), dtype=np.int32, count=count), b"".join(items)  # type: ignore[arg-type]
    except TypeError:  # a None among them: only then a Python-level pass
        lengths = np.fromiter(
            (-1 if item is None else len(item) for item in items), dtype=np.int32, count=count
        )
        blob = b"".join([item for item in items if item is not None])
        return lengths, blob


def encode_batch(
    values: Sequence[BytesLike | None],
    keys: Sequence[BytesLike | None] | None = None,
    timestamps: Sequence[int] | np.ndarray | int | None = None,
    headers: Sequence[Any] | None = None,
    *,
    codec: str | int = CODEC_NONE,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    """Encode lists of values (and optionally keys, timestamps, headers) into one batch.

    ``headers`` is a list with one entry per record: None or a list of (key, value) pairs.
    """
    count = len(values)
    value_lengths, value_blob = _lengths_and_blob(values, count)
    assert value_lengths is not None
    key_lengths, key_blob = _lengths_and_blob(keys, count)
    headers_lengths: np.ndarray | None = None
    header_blob: bytes = b""
    if headers is not None and any(headers):
        if len(headers) != count:
            raise ValueError(f"{len(headers)} headers for {count} records")
        encoded = [encode_headers(h) for h in headers]
        headers_lengths = np.fromiter(map(len, encoded), dtype=np.int32, count=count)
        header_blob = b"".join(encoded)
    if timestamps is not None and not isinstance(timestamps, (int, np.integer)):
        timestamps = np.asarray(timestamps, dtype=np.int64)
    return encode_columns(
        value_lengths=value_lengths,
        values=value_blob,
        key_lengths=key_lengths,
        keys=key_blob,
        timestamps=timestamps,  # type: ignore[arg-type]
        headers_lengths=headers_lengths,
        headers=header_blob,
        codec=codec,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
        control=control,
    )
