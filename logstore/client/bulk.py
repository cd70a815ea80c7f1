"""``Producer.send_batch``'s input forms, partitioned and cut into batches with numpy.

A *column* is n byte strings as ``(lengths, data)``: an int32 array (-1 = None) and their non-null
bytes back to back, a uint8 array. Every input form becomes one without a per-record Python loop:

- a list of bytes (or None): ``map(len, ...)`` and ``b"".join`` (C-level loops);
- ``(lengths, blob)``: a numpy length array and one bytes-like blob, used as they are;
- a 2-D uint8 array of fixed-size records: lengths are its row width, data is its buffer.

``plan`` then assigns partitions (given, murmur2 of the keys with ``murmur2_array``, or sticky per
batch), gathers each partition's records if there are several (a byte mask per partition), and
cuts each partition's run into slices of about ``batch_bytes`` from a cumulative sum of record
sizes. ``encode_slices`` encodes each slice with ``encode_columns``; values are never copied
before that final join.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from logstore.client.partitioner import partitions_for_keys
from logstore.records import RECORD_OVERHEAD, encode_columns
from logstore.records.encode import now_ms
from logstore.records.headers import encode_headers, normalize_headers

Column = tuple[np.ndarray, np.ndarray]
_EMPTY = np.empty(0, dtype=np.uint8)


def to_column(items: Any, name: str = "values") -> Column:
    """One of the input forms (see the module docstring) as (int32 lengths, uint8 data)."""
    if isinstance(items, np.ndarray):
        if items.ndim != 2:
            raise ValueError(f"{name} as an array must be 2-D (records x bytes), not {items.ndim}-D")
        rows, width = items.shape
        data = np.ascontiguousarray(items).view(np.uint8).reshape(-1)
        return np.full(rows, width * items.itemsize, dtype=np.int32), data
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], np.ndarray):
        lengths = np.asarray(items[0], dtype=np.int32)
        data = np.frombuffer(items[1], dtype=np.uint8) if len(items[1]) else _EMPTY
        expected = int(np.maximum(lengths, 0).sum())
        if expected != len(data):
            raise ValueError(f"{name} lengths add up to {expected} bytes, the blob has {len(data)}")
        if len(lengths) and lengths.min() < -1:
            raise ValueError(f"{name} lengths must be -1 (None) or more")
        return lengths, data
    if not isinstance(items, Sequence) or isinstance(items, (bytes, str)):
        raise TypeError(f"{name} must be a list of bytes, (lengths, blob), or a 2-D uint8 array")
    count = len(items)
    try:  # no None: one C-level pass each (a `None in items` scan alone costs ~40 ns a record)
        lengths = np.fromiter(map(len, items), np.int32, count)
        blob = b"".join(items)
    except TypeError:  # a None (or something that is not bytes: the join below says so)
        lengths = np.fromiter((-1 if item is None else len(item) for item in items), np.int32, count)
        blob = b"".join([item for item in items if item is not None])
    return lengths, np.frombuffer(blob, dtype=np.uint8) if blob else _EMPTY


_HEADER_VALUE_TYPES = (bytes, bytearray, memoryview, str)


def checked_headers(headers: Any) -> list[tuple[str | bytes, Any]]:
    """(key, value) pairs from a list or dict; keys str or bytes, values bytes, str or None."""
    pairs = normalize_headers(headers) or []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"a header is a (key, value) pair, not {pair!r}")
        key, value = pair
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"header keys are str or bytes, not {type(key).__name__}")
        if value is not None and not isinstance(value, _HEADER_VALUE_TYPES):
            raise TypeError(f"header values are bytes, str or None, not {type(value).__name__}")
    return pairs  # type: ignore[return-value]


def as_value(value: Any) -> tuple[bytes | None, int]:
    """A value other than bytes as (bytes or None, length; -1 for None)."""
    if value is None:
        return None, -1
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
        return value, len(value)
    if isinstance(value, str):
        value = value.encode()
        return value, len(value)
    raise TypeError(f"record values are bytes (or str, or None), not {type(value).__name__}")


def as_key(key: Any) -> bytes:
    """A key as bytes (str is UTF-8 encoded)."""
    if key.__class__ is bytes:
        return key  # type: ignore[no-any-return]
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"record keys are bytes (or str, or None), not {type(key).__name__}")


def headers_column(headers: Sequence[Any], count: int) -> Column:
    """Per-record headers (None or pairs) encoded; the one per-record loop, for a rare input."""
    if len(headers) != count:
        raise ValueError(f"{len(headers)} headers for {count} records")
    encoded = [encode_headers(checked_headers(item)) for item in headers]
    blob = b"".join(encoded)
    return (np.fromiter(map(len, encoded), np.int32, count),
            np.frombuffer(blob, dtype=np.uint8) if blob else _EMPTY)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each item's bytes begin in the column's data (n + 1 entries)."""
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.maximum(lengths, 0), out=starts[1:])
    return starts


def take(column: Column, selected: np.ndarray) -> Column:
    """The items where ``selected`` (a bool mask) is True, in order."""
    lengths, data = column
    byte_mask = np.repeat(selected, np.maximum(lengths, 0))
    return lengths[selected], data[byte_mask]


@dataclass
class Slice:
    """The records of one batch to be: columns cut to it, and its partition."""

    partition: int
    values: Column
    keys: Column | None
    headers: Column | None
    timestamps: np.ndarray | int

    def __len__(self) -> int:
        return len(self.values[0])


def _cut(column: Column | None, starts: np.ndarray | None, lo: int, hi: int) -> Column | None:
    if column is None or starts is None:
        return None
    lengths, data = column
    return lengths[lo:hi], data[starts[lo] : starts[hi]]


def plan(
    *,
    values: Column,
    keys: Column | None,
    headers: Column | None,
    timestamps: np.ndarray | int,
    partition: int | None,
    partitions: int,
    batch_bytes: int,
    sticky: Callable[[int], list[int]],
) -> Iterator[Slice]:
    """Assign partitions and cut into ~``batch_bytes`` slices, in record order per partition.

    ``sticky(n)`` gives the partitions of n keyless batches (the producer's sticky partitioner).
    """
    count = len(values[0])
    if partition is not None:
        yield from _slices(partition, values, keys, headers, timestamps, batch_bytes)
        return
    if keys is None or count == 0:
        slices = list(_slices(-1, values, None, headers, timestamps, batch_bytes))
        for piece, chosen in zip(slices, sticky(len(slices)), strict=True):
            piece.partition = chosen
            yield piece
        return
    key_lengths, key_data = keys
    assigned = partitions_for_keys(np.maximum(key_lengths, 0), key_data.tobytes(), partitions)
    nulls = key_lengths < 0
    if nulls.any():  # keyless records of a keyed call share one sticky partition
        assigned[nulls] = sticky(1)[0]
    present = np.unique(assigned)
    if len(present) == 1:
        yield from _slices(int(present[0]), values, keys, headers, timestamps, batch_bytes)
        return
    for chosen in present.tolist():
        selected = assigned == chosen
        yield from _slices(
            chosen,
            take(values, selected),
            take(keys, selected),
            None if headers is None else take(headers, selected),
            timestamps if isinstance(timestamps, int) else timestamps[selected],
            batch_bytes,
        )


def _slices(
    partition: int,
    values: Column,
    keys: Column | None,
    headers: Column | None,
    timestamps: np.ndarray | int,
    batch_bytes: int,
) -> Iterator[Slice]:
    lengths = values[0]
    count = len(lengths)
    sizes = np.maximum(lengths, 0).astype(np.int64) + RECORD_OVERHEAD
    if keys is not None:
        sizes += np.maximum(keys[0], 0)
    if headers is not None:
        sizes += headers[0]
    cumulative = np.cumsum(sizes)
    total = int(cumulative[-1]) if count else 0
    # Batch k ends after the record whose running size first reaches (k + 1) * batch_bytes.
    marks = np.arange(batch_bytes, total, batch_bytes, dtype=np.int64)
    bounds = np.unique(np.searchsorted(cumulative, marks, side="left") + 1)
    bounds = bounds[(bounds > 0) & (bounds < count)]
    edges = [0, *bounds.tolist(), count]
    value_starts = _starts(lengths)
    key_starts = None if keys is None else _starts(keys[0])
    header_starts = None if headers is None else _starts(headers[0])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        yield Slice(
            partition,
            (lengths[lo:hi], values[1][value_starts[lo] : value_starts[hi]]),
            _cut(keys, key_starts, lo, hi),
            _cut(headers, header_starts, lo, hi),
            timestamps if isinstance(timestamps, int) else timestamps[lo:hi],
        )


def timestamps_of(timestamps: Any, count: int) -> np.ndarray | int:
    """None -> now (one value for every record), an int, or an int64 array of ``count``."""
    if timestamps is None:
        return now_ms()
    if isinstance(timestamps, (int, np.integer)):
        return int(timestamps)
    stamps = np.asarray(timestamps, dtype=np.int64)
    if stamps.shape != (count,):
        raise ValueError(f"{len(stamps)} timestamps for {count} records")
    return stamps


#: Record timestamps within one batch lie within this many ms of its first (an <i4 delta).
MAX_TIMESTAMP_DELTA = (1 << 31) - 1


def timestamp_runs(stamps: np.ndarray) -> list[tuple[int, int]]:
    """Cut points so that each run's timestamps lie within ``MAX_TIMESTAMP_DELTA`` of its first.
    One run unless explicit timestamps are weeks apart."""
    count = len(stamps)
    if count == 0 or int(np.abs(stamps - stamps[0]).max()) <= MAX_TIMESTAMP_DELTA:
        return [(0, count)]
    runs = []
    start = 0
    while start < count:
        far = np.flatnonzero(np.abs(stamps[start:] - stamps[start]) > MAX_TIMESTAMP_DELTA)
        end = start + int(far[0]) if len(far) else count
        runs.append((start, end))
        start = end
    return runs


#: What an idempotent or transactional producer writes into each batch header:
#: (producer_id, producer_epoch, base_sequence of the first record, transactional).
Stamp = tuple[int, int, int, bool]


def encode_slice(piece: Slice, codec: str, stamp: Stamp | None = None) -> bytes:
    """The slice as one batch, or several back to back if its timestamps are weeks apart.
    With a ``stamp``, each batch's base sequence is the stamp's plus the records before it."""
    if isinstance(piece.timestamps, int):
        return _encode(piece, codec, stamp)
    runs = timestamp_runs(piece.timestamps)
    if len(runs) == 1:
        return _encode(piece, codec, stamp)
    value_starts = _starts(piece.values[0])
    key_starts = None if piece.keys is None else _starts(piece.keys[0])
    header_starts = None if piece.headers is None else _starts(piece.headers[0])
    parts = []
    for lo, hi in runs:
        values = _cut(piece.values, value_starts, lo, hi)
        assert values is not None
        run_stamp = None
        if stamp is not None:
            run_stamp = (stamp[0], stamp[1], (stamp[2] + lo) & SEQUENCE_MASK, stamp[3])
        parts.append(_encode(Slice(
            piece.partition,
            values,
            _cut(piece.keys, key_starts, lo, hi),
            _cut(piece.headers, header_starts, lo, hi),
            piece.timestamps[lo:hi],
        ), codec, run_stamp))
    return b"".join(parts)


#: Sequence numbers wrap at 2**31, as the broker's do.
SEQUENCE_MASK = 0x7FFFFFFF


def _encode(piece: Slice, codec: str, stamp: Stamp | None = None) -> bytes:
    value_lengths, value_data = piece.values
    key_lengths, key_data = piece.keys if piece.keys is not None else (None, _EMPTY)
    headers_lengths, header_data = piece.headers if piece.headers is not None else (None, _EMPTY)
    identity: dict[str, Any] = {}
    if stamp is not None:
        producer_id, producer_epoch, base_sequence, transactional = stamp
        identity = {"producer_id": producer_id, "producer_epoch": producer_epoch,
                    "base_sequence": base_sequence, "transactional": transactional}
    return encode_columns(
        value_lengths=value_lengths,
        values=value_data.data,
        key_lengths=key_lengths,
        keys=key_data.data,
        timestamps=piece.timestamps,
        headers_lengths=headers_lengths,
        headers=header_data.data,
        codec=codec,
        **identity,
    )
