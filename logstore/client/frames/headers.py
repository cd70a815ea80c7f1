"""Record headers -> an Arrow ``map<string, binary>`` column, without a Python step per record.

One record's headers are entries of ``key_length <u2, key, value_length <i4 (-1 = null),
value`` (``logstore.records.headers``). The entries are read for every record at once, one
numpy pass per entry *depth* (all first entries, then all second ones, ...), so the Python loop
runs as many times as the most headers one record has. Keys and values are then gathered into
Arrow's layout (one ``data[index]`` each). A record without headers gets an empty map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logstore.errors import CorruptBatchError


def _gather(data: np.ndarray, positions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 Arrow offsets, the bytes of each (position, length) back to back)."""
    clipped = np.maximum(lengths, 0)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(clipped, out=offsets[1:])
    index = np.repeat(positions - offsets[:-1], clipped) + np.arange(int(offsets[-1]))
    return offsets, data[index]


def _bytes_at(data: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """The little-endian unsigned integer of ``width`` bytes at each position, as int64."""
    value = np.zeros(len(positions), dtype=np.int64)
    for byte in range(width):
        value |= data[positions + byte].astype(np.int64) << (8 * byte)
    return value


def _int32(pa: Any, values: np.ndarray) -> Any:
    """An int32 numpy array as an Arrow array over its memory (``pa.array`` would first import
    pandas to ask whether it is a Series: a second on the first call)."""
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


_EMPTY: list[Any] = []  # [a MapArray of empty maps], grown on demand; sliced, never written


def empty_maps(pa: Any, count: int) -> Any:
    """``count`` empty maps: a zero-copy slice of one shared array (threads may grow it at
    once: each slices the one it saw)."""
    shared = _EMPTY[0] if _EMPTY else None
    if shared is None or len(shared) < count:
        size = max(count, 1 << 16)
        shared = pa.MapArray.from_arrays(
            _int32(pa, np.zeros(size + 1, dtype=np.int32)), pa.nulls(0, pa.string()),
            pa.nulls(0, pa.binary()), type=pa.map_(pa.string(), pa.binary()))
        _EMPTY[:] = [shared]
    return shared.slice(0, count)


def to_map(pa: Any, buffer: Any, positions: np.ndarray, lengths: np.ndarray) -> Any:
    """The map array of every record's headers (``positions``/``lengths`` index ``buffer``)."""
    count = len(lengths)
    map_type = pa.map_(pa.string(), pa.binary())
    if not lengths.any():
        return empty_maps(pa, count)
    records = np.flatnonzero(lengths > 0)
    data = np.frombuffer(buffer, dtype=np.uint8)
    cursor = positions[records].astype(np.int64)
    end = cursor + lengths[records]
    found: list[tuple[np.ndarray, ...]] = []
    while len(records):
        if (cursor + 2 > end).any():
            raise CorruptBatchError("record header key length runs past the headers")
        key_lengths = _bytes_at(data, cursor, 2)
        key_positions = cursor + 2
        length_positions = key_positions + key_lengths
        if (length_positions + 4 > end).any():
            raise CorruptBatchError("record header key runs past the headers")
        value_lengths = _bytes_at(data, length_positions, 4).astype(np.uint32).view(np.int32)
        value_positions = length_positions + 4
        cursor = value_positions + np.maximum(value_lengths, 0)
        if (value_lengths < -1).any() or (cursor > end).any():
            raise CorruptBatchError("record header value runs past the headers")
        found.append((records, key_positions, key_lengths, value_positions, value_lengths))
        more = cursor < end
        records, cursor, end = records[more], cursor[more], end[more]
    owner, key_positions, key_lengths, value_positions, value_lengths = (
        np.concatenate(parts) for parts in zip(*found, strict=True)
    )
    order = np.argsort(owner, kind="stable")  # by record; entries keep their order within one
    map_offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(np.bincount(owner, minlength=count), out=map_offsets[1:])
    key_offsets, key_bytes = _gather(data, key_positions[order], key_lengths[order])
    keys = pa.Array.from_buffers(pa.string(), len(order),
                                 [None, pa.py_buffer(key_offsets), pa.py_buffer(key_bytes)])
    try:
        keys.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise CorruptBatchError("record header key is not UTF-8") from exc
    value_lengths = value_lengths[order]
    value_offsets, value_bytes = _gather(data, value_positions[order], value_lengths)
    validity = None
    if (value_lengths < 0).any():
        validity = pa.py_buffer(np.packbits(value_lengths >= 0, bitorder="little"))
    values = pa.Array.from_buffers(
        pa.binary(), len(order),
        [validity, pa.py_buffer(value_offsets), pa.py_buffer(value_bytes)],
        null_count=int(np.count_nonzero(value_lengths < 0)),
    )
    return pa.MapArray.from_arrays(_int32(pa, map_offsets), keys, values, type=map_type)
