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


def schema(columns: Sequence[str] = COLUMNS) -> Any:
    pa = pyarrow()
    types = {
        "partition": pa.int32(),
        "offset": pa.int64(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
        "key": pa.binary(),
        "value": pa.binary(),
        "headers": pa.map_(pa.string(), pa.binary()),
    }
    return pa.schema(
        [pa.field(name, types[name], nullable=name in ("key", "value")) for name in columns]
    )


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


def _binary(
    pa: Any, buffer: Any, positions: np.ndarray, lengths: np.ndarray, runs: np.ndarray | None
) -> Any:
    """One binary array: a view of ``buffer`` when the records are contiguous (``runs`` None),
    else a copy of the runs (each starting at an index of ``runs``) joined."""
    count = len(lengths)
    offsets = np.empty(count + 1, dtype=np.int32)
    view = memoryview(buffer)
    last_length = max(int(lengths[-1]), 0) if count else 0
    if runs is None:
        start = int(positions[0]) if count else 0
        np.subtract(positions, start, out=offsets[:-1], casting="unsafe")
        offsets[-1] = (int(positions[-1]) - start + last_length) if count else 0
        data = pa.py_buffer(view[start : start + int(offsets[-1])])
    else:
        offsets[0] = 0
        np.cumsum(np.maximum(lengths, 0), out=offsets[1:])
        lasts = np.concatenate((runs[1:], [count])) - 1
        starts = positions[runs]
        stops = positions[lasts] + np.maximum(lengths[lasts], 0)
        data = pa.py_buffer(b"".join(map(view.__getitem__, map(slice, starts.tolist(), stops.tolist()))))
    validity = None
    nulls = 0
    if count and int(lengths.min()) < 0:
        valid = lengths >= 0
        nulls = count - int(np.count_nonzero(valid))
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(), count, [validity, pa.py_buffer(offsets), data],
                                 null_count=nulls)


_PARTITIONS: dict[int, Any] = {}  # partition -> an int32 array of it, sliced, never written


def _partition_column(pa: Any, partition: int, count: int) -> Any:
    """``count`` times ``partition``: a zero-copy slice of one shared array per partition."""
    column = _PARTITIONS.get(partition)
    if column is None or len(column) < count:
        column = pa.array(np.full(max(count, 1 << 16), partition, dtype=np.int32))
        _PARTITIONS[partition] = column
    return column.slice(0, count)


def to_batches(
    columns: RecordColumns, partition: int, names: Sequence[str] = COLUMNS
) -> list[Any]:
    """``columns`` (one message's records) as Arrow record batches with ``names``."""
    pa = pyarrow()
    count = len(columns)
    if count == 0:
        return []
    want_keys = "key" in names and int(columns.key_lengths.max()) >= 0
    starts = columns.batch_starts
    gather = len(starts) > 1 and count / len(starts) < MIN_RUN_RECORDS
    bounds = [0, count] if gather else [*starts.tolist(), count]
    out_schema = schema(names)
    timestamp_type = out_schema.field("timestamp").type if "timestamp" in names else None
    header_maps = None
    if "headers" in names:
        lengths = columns.headers_lengths
        header_maps = (header_columns.to_map(pa, columns.buffer, columns.headers_positions,
                                             lengths)
                       if lengths.any() else header_columns.empty_maps(pa, count))
    batches = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        arrays = []
        for name in names:
            if name == "partition":
                arrays.append(_partition_column(pa, partition, hi - lo))
            elif name == "offset":
                arrays.append(pa.array(columns.offsets[lo:hi]))
            elif name == "timestamp":
                stamps = np.ascontiguousarray(columns.timestamps[lo:hi])
                arrays.append(pa.Array.from_buffers(timestamp_type, hi - lo,
                                                    [None, pa.py_buffer(stamps)]))
            elif name == "key":
                if want_keys:
                    arrays.append(_binary(pa, columns.buffer, columns.key_positions[lo:hi],
                                          columns.key_lengths[lo:hi], starts if gather else None))
                else:
                    arrays.append(pa.nulls(hi - lo, pa.binary()))
            elif name == "value":
                arrays.append(_binary(pa, columns.buffer, columns.value_positions[lo:hi],
                                      columns.value_lengths[lo:hi], starts if gather else None))
            else:
                assert header_maps is not None
                arrays.append(header_maps.slice(lo, hi - lo))
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=out_schema))
    return batches
