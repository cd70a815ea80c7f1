"""``Producer.send_arrow``: the rows of a table become records, column by column.

The table is a ``pyarrow.Table`` or ``RecordBatch``, a pandas ``DataFrame`` (``from_pandas``,
index dropped) or a polars ``DataFrame`` (``to_arrow``). Each row is one record:

- ``value``: the name of a binary or string column, whose bytes are the values as they are (a
  null is a tombstone); or None (the default): every row as one JSON object, keys in column
  order, encoded by Arrow compute kernels column by column (numbers and booleans as JSON
  literals, strings escaped, timestamps and dates as ISO strings, nulls and NaN as ``null``).
  Nested columns (structs, lists, maps) need polars (``logstore[polars]``), whose NDJSON
  writer then encodes the rows; a binary column cannot be JSON and is refused.
- ``key``: a column name (binary or string; other types are cast to their string form) or None.
- ``timestamp``: a timestamp column, an integer column of ms since the epoch, or None (now).
- ``headers``: a ``map<string, binary|string>`` column (as ``read_arrow`` gives) or None; the one
  part encoded record by record (headers are rare).
- ``partition``: an int, a column of partition numbers (each partition's rows sent in order,
  as one ``send_batch`` each), or None (by key, else sticky).

The lengths and bytes of each column go to ``Producer.send_batch`` as ``(lengths, blob)``
without a per-record Python step; a single-chunk binary column's bytes are not copied before
the batch is encoded.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

from logstore.client.frames.extras import pyarrow, require

Column = tuple[np.ndarray, np.ndarray]


def as_table(frame: Any) -> Any:
    """A pyarrow Table from a Table, RecordBatch, pandas or polars DataFrame."""
    pa = pyarrow("send_arrow")
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    module = type(frame).__module__.split(".", 1)[0]
    if module == "pandas":
        return pa.Table.from_pandas(frame, preserve_index=False)
    if module == "polars":
        return frame.to_arrow()
    raise TypeError(
        f"send_arrow takes a pyarrow Table or RecordBatch, or a pandas or polars DataFrame, "
        f"not {type(frame).__name__}"
    )


def _column(table: Any, name: str, role: str) -> Any:
    if name not in table.column_names:
        raise ValueError(f"{role} column {name!r} is not in the table ({table.column_names})")
    return table.column(name)


def bytes_column(pa: Any, column: Any) -> Column:
    """A binary/string column as (int32 lengths, -1 for null; uint8 data), data a view."""
    if not (pa.types.is_binary(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_binary(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    large = pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type)
    _validity, offset_buffer, data_buffer = array.buffers()
    count = len(array)
    offsets = np.frombuffer(offset_buffer, dtype=np.int64 if large else np.int32)
    offsets = offsets[array.offset : array.offset + count + 1]
    lengths = np.diff(offsets).astype(np.int32)
    if array.null_count:
        lengths[~np.asarray(array.is_valid(), dtype=bool)] = -1
    if data_buffer is None or count == 0:
        return lengths, np.empty(0, dtype=np.uint8)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    if array.null_count and (np.diff(offsets)[lengths < 0] != 0).any():
        data = np.frombuffer(b"".join(v for v in array.to_pylist() if v is not None), np.uint8)
    return lengths, data


def _json_scalar(pa: Any, compute: Any, column: Any) -> Any:
    """One column as the text of its JSON values ("null" for nulls)."""
    kind = column.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        text = column.cast(pa.string())
    elif pa.types.is_floating(kind):
        finite = compute.is_finite(column)
        text = compute.if_else(finite, column.cast(pa.string()), pa.scalar(None, pa.string()))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_temporal(kind):
        text = column.cast(pa.string())
        if compute.any(compute.match_substring_regex(text, "[\\x00-\\x08\\x0b\\x0e-\\x1f]")).as_py():
            raise ValueError("a string holds a control character send_arrow's JSON does not escape")
        for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"),
                             ("\t", "\\t"), ("\x0c", "\\f")):
            text = compute.replace_substring(text, raw, escaped)
        text = compute.binary_join_element_wise('"', text, '"', "")
    elif pa.types.is_null(kind):
        text = pa.nulls(len(column), pa.string())
    else:
        raise TypeError(f"a {kind} column is not JSON")
    return compute.fill_null(text, "null")


def json_lines(table: Any) -> Column:
    """Every row as one JSON object (lengths, bytes)."""
    pa = pyarrow("send_arrow")
    compute = require("pyarrow.compute", "send_arrow")
    nested = [f.name for f in table.schema
              if pa.types.is_nested(f.type) or pa.types.is_dictionary(f.type)]
    if nested:
        polars = require("polars", f"send_arrow of nested columns ({', '.join(nested)}) as JSON")
        text = polars.from_arrow(table).write_ndjson().encode()
        data = np.frombuffer(text, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = (ends - starts).astype(np.int32)
        blob = np.delete(data, ends)
        return lengths, blob
    parts: list[Any] = []
    for index, field in enumerate(table.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise TypeError(f"column {field.name!r} is binary, which is not JSON: name it as "
                            f"value= or drop it")
        prefix = ("{" if index == 0 else ",") + json.dumps(field.name) + ":"
        parts += [prefix, _json_scalar(pa, compute, table.column(index))]
    if not parts:
        return np.full(table.num_rows, 2, dtype=np.int32), np.frombuffer(b"{}" * table.num_rows, np.uint8)
    lines = compute.binary_join_element_wise(*parts, "}", "")
    return bytes_column(pa, lines)


def timestamps(pa: Any, column: Any) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ms", tz=column.type.tz)).cast(pa.int64())
    elif not pa.types.is_integer(column.type):
        raise TypeError(f"a timestamp column is a timestamp or ms integers, not {column.type}")
    if column.null_count:
        raise ValueError("the timestamp column has nulls")
    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def plan(
    frame: Any, value: str | None, key: str | None, timestamp: str | None,
    headers: str | None, partition: int | str | None,
) -> list[dict[str, Any]]:
    """The ``send_batch`` keyword arguments the rows become (one dict per partition column
    value, else one)."""
    pa = pyarrow("send_arrow")
    table = as_table(frame)
    if value is None:
        others = {name for name in (key, timestamp, headers, partition) if isinstance(name, str)}
        values = json_lines(table.drop_columns([n for n in table.column_names if n in others]))
    else:
        values = bytes_column(pa, _column(table, value, "value"))
    arguments: dict[str, Any] = {"values": values}
    if key is not None:
        arguments["keys"] = bytes_column(pa, _column(table, key, "key"))
    if timestamp is not None:
        arguments["timestamps"] = timestamps(pa, _column(table, timestamp, "timestamp"))
    if headers is not None:
        arguments["headers"] = _column(table, headers, "headers").to_pylist()
    if not isinstance(partition, str):
        arguments["partition"] = partition
        return [arguments]
    numbers = np.asarray(_column(table, partition, "partition").cast(pa.int64()).to_numpy(),
                         dtype=np.int64)
    return [_rows(arguments, numbers == number, int(number)) for number in np.unique(numbers)]


def _rows(arguments: dict[str, Any], mask: np.ndarray, partition: int) -> dict[str, Any]:
    """The arguments for the rows in ``mask``, sent to ``partition``."""
    out: dict[str, Any] = {"partition": partition}
    for name, item in arguments.items():
        if name in ("values", "keys"):
            out[name] = _take(item, mask)
        elif name == "timestamps":
            out[name] = item[mask]
        elif name == "headers":
            out[name] = [h for h, keep in zip(item, mask.tolist(), strict=True) if keep]
    return out


def _take(column: Column, mask: np.ndarray) -> Column:
    lengths, data = column
    clipped = np.maximum(lengths, 0)
    starts = np.concatenate(([0], np.cumsum(clipped)[:-1]))
    index = np.repeat(starts[mask] - np.concatenate(([0], np.cumsum(clipped[mask])[:-1])),
                      clipped[mask]) + np.arange(int(clipped[mask].sum()))
    return lengths[mask], data[index]


def gather(futures: list[Future[list[Any]]]) -> Future[list[Any]]:
    """One future of every future's list, concatenated in order (the first error wins)."""
    if len(futures) == 1:
        return futures[0]
    combined: Future[list[Any]] = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_future: Future[list[Any]]) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        for future in futures:
            if future.exception() is not None:
                combined.set_exception(future.exception())
                return
        combined.set_result([item for future in futures for item in future.result()])

    for future in futures:
        future.add_done_callback(done)
    return combined
