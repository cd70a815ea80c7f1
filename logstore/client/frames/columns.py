"""Fetched record bytes -> ``pyarrow.RecordBatch``, the values and keys not copied.

A record section keeps each column's bytes back to back: ``values[i]`` is
``section[value_start + sum(lengths[:i]) ...]``. Arrow's binary layout is the same bytes plus
``offsets[n + 1]`` (int32: ``offsets[i+1] - offsets[i]`` is value i's length) and a validity
bitmap (bit i = 0 for a null). So one Arrow binary array is::

    validity  np.packbits(lengths >= 0, bitorder="little")   (left out when nothing is null)
    offsets   0, cumsum(max(lengths, 0))                      int32, numpy
    data      a memoryview of the fetched message              no copy

Within one log batch the values are contiguous; between batches lie the next batch's header and
columns. A message of several batches therefore becomes one Arrow record batch per log batch
(usually thousands of records; ``RecordColumns.batch_starts``), every buffer a view; the offsets
are the value positions numpy already computed, less the first. Only when
the batches are short (fewer than ``MIN_RUN_RECORDS`` records on average, e.g. a topic written
one record per batch) are their bytes gathered into one buffer (one ``b"".join``, no Python step per
record): thousands of one-row Arrow batches would cost far more than the copy.

A compressed batch is decompressed first (``decode_columns``); its arrays view that copy.
A log batch is at most 2 GiB, so int32 offsets always suffice here (see ``read`` for tables).

Columns: ``partition`` int32, ``offset`` int64, ``timestamp`` timestamp[ms, UTC], ``key`` binary
(null for a null key), ``value`` binary (null for a tombstone), ``headers`` map<string, binary>.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from logstore.client.frames import headers as header_columns
from logstore.client.frames.extras import pyarrow
from logstore.records import RecordColumns, decode_columns
from logstore.records.decode import skip_aborted

COLUMNS = ("partition", "offset", "timestamp", "key", "value", "headers")

#: Below this many records per log batch (on average), a message's batches are gathered.
MIN_RUN_RECORDS = 256


_SCHEMAS: dict[tuple[str, ...], Any] = {}  # columns -> their schema, built once


def schema(columns: Sequence[str] = COLUMNS) -> Any:
    names = tuple(columns)
    found = _SCHEMAS.get(names)
    if found is not None:
        return found
    pa = pyarrow()
    types = {
        "partition": pa.int32(),
        "offset": pa.int64(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
        "key": pa.binary(),
        "value": pa.binary(),
        "headers": pa.map_(pa.string(), pa.binary()),
    }
    found = _SCHEMAS[names] = pa.schema(
        [pa.field(name, types[name], nullable=name in ("key", "value")) for name in names]
    )
    return found


def check_columns(columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        return COLUMNS
    chosen = tuple(columns)
    unknown = [name for name in chosen if name not in COLUMNS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"columns must be distinct names out of {list(COLUMNS)}, not {chosen}")
    return chosen


def decode(records: Any, first: int, stop: int, aborted: list[tuple[int, int, int]]) -> RecordColumns:
    """The records of one message with offsets in [first, stop), aborted batches and control
    batches left out."""
    columns = decode_columns(records, min_offset=first, include=skip_aborted(aborted))
    if len(columns) and columns.offsets[-1] >= stop:
        columns = columns.slice(0, int(np.searchsorted(columns.offsets, np.int64(stop))))
    return columns


def _validity(pa: Any, lengths: np.ndarray) -> tuple[Any, int]:
    """(the validity bitmap or None, the null count) of records whose length -1 means null."""
    if not len(lengths) or int(lengths.min()) >= 0:
        return None, 0
    valid = lengths >= 0
    return (pa.py_buffer(np.packbits(valid, bitorder="little")),
            len(lengths) - int(np.count_nonzero(valid)))


def _binary_runs(
    pa: Any, buffer: Any, positions: np.ndarray, lengths: np.ndarray, bounds: np.ndarray
) -> list[Any]:
    """One binary array per run of records ``bounds[j]:bounds[j+1]`` (each run's bytes are
    contiguous in ``buffer``), every data buffer a view of ``buffer``. The offsets of all runs
    are computed into one int32 array (run j's n+1 offsets at ``bounds[j] + j``)."""
    runs = len(bounds) - 1
    offsets = np.empty(len(lengths) + runs, dtype=np.int32)
    view = memoryview(buffer)
    firsts = positions[bounds[:-1]].tolist()
    lasts = bounds[1:] - 1
    stops = (positions[lasts] + np.maximum(lengths[lasts], 0)).tolist()
    offsets_buffer = pa.py_buffer(offsets)
    arrays = []
    for run, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        first = firsts[run]
        out = offsets[lo + run : hi + run + 1]
        np.subtract(positions[lo:hi], first, out=out[:-1], casting="unsafe")
        out[-1] = stops[run] - first
        validity, nulls = _validity(pa, lengths[lo:hi])
        arrays.append(pa.Array.from_buffers(
            pa.binary(), hi - lo,
            [validity, offsets_buffer.slice(4 * (lo + run), 4 * (hi - lo + 1)),
             pa.py_buffer(view[first : stops[run]])],
            null_count=nulls))
    return arrays


def _binary_gathered(
    pa: Any, buffer: Any, positions: np.ndarray, lengths: np.ndarray, runs: np.ndarray
) -> Any:
    """One binary array of every record, the bytes of each run (starting at an index of
    ``runs``) copied together by one join."""
    count = len(lengths)
    offsets = np.empty(count + 1, dtype=np.int32)
    offsets[0] = 0
    np.cumsum(np.maximum(lengths, 0), out=offsets[1:])
    lasts = np.concatenate((runs[1:], [count])) - 1
    starts = positions[runs]
    stops = positions[lasts] + np.maximum(lengths[lasts], 0)
    view = memoryview(buffer)
    data = pa.py_buffer(b"".join(map(view.__getitem__, map(slice, starts.tolist(), stops.tolist()))))
    validity, nulls = _validity(pa, lengths)
    return pa.Array.from_buffers(pa.binary(), count, [validity, pa.py_buffer(offsets), data],
                                 null_count=nulls)


def _binary(
    pa: Any, buffer: Any, positions: np.ndarray, lengths: np.ndarray, bounds: np.ndarray,
    gathered: np.ndarray | None,
) -> list[Any]:
    """Per run of ``bounds`` a zero-copy array, or (``gathered``: the batch starts) one copy."""
    if gathered is not None:
        return [_binary_gathered(pa, buffer, positions, lengths, gathered)]
    return _binary_runs(pa, buffer, positions, lengths, bounds)


class _Shared:
    """One array per kind, grown on demand, handed out as zero-copy slices (never written)."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._arrays: dict[Any, Any] = {}

    def get(self, key: Any, count: int) -> Any:
        column = self._arrays.get(key)
        if column is None or len(column) < count:
            column = self._arrays[key] = self._make(key, max(count, 1 << 16))
        return column.slice(0, count)


def _partitions(partition: int, count: int) -> Any:
    pa = pyarrow()
    return pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(
        np.full(count, partition, dtype=np.int32))])


_PARTITIONS = _Shared(_partitions)  # partition -> count times it
_NULL_KEYS = _Shared(lambda _key, count: pyarrow().nulls(count, pyarrow().binary()))


def partitions_array(partition: int, count: int) -> Any:
    """An int32 array of ``count`` times ``partition`` (a slice of a shared one)."""
    return _PARTITIONS.get(partition, count)


def null_keys(count: int) -> Any:
    """``count`` null binaries (a slice of a shared array)."""
    return _NULL_KEYS.get(None, count)


def _primitive(pa: Any, arrow_type: Any, values: np.ndarray) -> Any:
    """A numpy column as an Arrow array over the same memory (no pandas detour)."""
    return pa.Array.from_buffers(arrow_type, len(values),
                                 [None, pa.py_buffer(np.ascontiguousarray(values))])


def to_batches(
    columns: RecordColumns, partition: int, names: Sequence[str] = COLUMNS
) -> list[Any]:
    """``columns`` (one message's records) as Arrow record batches with ``names``.

    The offset, timestamp, partition and headers columns are built once for the whole message
    and sliced per batch; keys and values are one binary array per log batch."""
    pa = pyarrow()
    count = len(columns)
    if count == 0:
        return []
    starts = columns.batch_starts
    gather = len(starts) > 1 and count / len(starts) < MIN_RUN_RECORDS
    bounds = np.array([0, count]) if gather else np.append(starts, count)
    gathered = starts if gather else None
    out_schema = schema(names)
    whole: dict[str, Any] = {}
    per_run: dict[str, list[Any]] = {}
    for name in names:
        if name == "partition":
            whole[name] = _PARTITIONS.get(partition, count)
        elif name == "offset":
            whole[name] = _primitive(pa, pa.int64(), columns.offsets)
        elif name == "timestamp":
            whole[name] = _primitive(pa, out_schema.field("timestamp").type, columns.timestamps)
        elif name == "key":
            key_lengths = columns.key_lengths
            if int(key_lengths.max()) >= 0:
                per_run[name] = _binary(pa, columns.buffer, columns.key_positions, key_lengths,
                                        bounds, gathered)
            else:
                whole[name] = _NULL_KEYS.get(None, count)
        elif name == "value":
            per_run[name] = _binary(pa, columns.buffer, columns.value_positions,
                                    columns.value_lengths, bounds, gathered)
        else:
            lengths = columns.headers_lengths
            whole[name] = (header_columns.to_map(pa, columns.buffer, columns.headers_positions,
                                                 lengths)
                           if lengths.any() else header_columns.empty_maps(pa, count))
    if len(bounds) == 2:
        arrays = [whole[name] if name in whole else per_run[name][0] for name in names]
        return [pa.RecordBatch.from_arrays(arrays, schema=out_schema)]
    batches = []
    for run, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        arrays = [whole[name].slice(lo, hi - lo) if name in whole else per_run[name][run]
                  for name in names]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=out_schema))
    return batches
