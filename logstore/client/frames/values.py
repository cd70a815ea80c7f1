"""``value_format``: what the ``value`` column holds.

- ``"binary"`` (the default): the value's bytes, as stored.
- ``"utf8"``: the value as an Arrow string (UTF-8 checked by Arrow; the data buffer is kept).
- ``"json"``: every value is one JSON object; Arrow's JSON reader parses each fetched message's
  values at once (``read_arrow`` as each message arrives, ``Formatter.piece``, two messages at
  once on the formatter's threads; a bad value raises as soon as its message and those fetched
  before it are parsed, else ``Formatter.join`` does) into a
  ``struct`` column with typed, nested fields (``schema=`` a ``pyarrow.schema`` fixes the
  fields and types; otherwise they are inferred: over the whole range by ``read_arrow``, the
  messages' types unified by ``Formatter.join``, each message tried first with the types of the
  latest one parsed, or of the first message's first ``HINT_SAMPLE_VALUES`` values
  (``_json``'s ``hint``), from the first batch by ``iter_arrow``, whose
  later batches keep that schema and drop other fields). The values are joined as JSON lines
  (one copy); a raw line break inside a value is
  read as a space. ``table.flatten()`` turns the struct into ``value.<field>`` columns.
- ``"arrow"``: every value is an Arrow IPC stream (written with ``pyarrow.ipc.new_stream``);
  each row of every value becomes a row, ``value`` a struct of the stream's columns, with its
  record's partition, offset, timestamp, key and headers repeated. All values must have one
  schema. (One IPC read per record: meant for values that hold many rows each.)

A null value (a tombstone) stays a null row. A value that does not parse raises
``ValueFormatError`` naming its partition and offset; with ``errors="null"`` its ``value`` is
null instead and a ``value_error`` string column says why (null where the value parsed).
Finding *which* value is bad costs a per-record check, done only after Arrow refused a batch.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from logstore.client.frames.extras import pyarrow, require

FORMATS = ("binary", "utf8", "json", "arrow")
ERRORS = ("raise", "null")
#: Added to the table with errors="null".
ERROR_COLUMN = "value_error"
NEWLINE, CARRIAGE_RETURN, SPACE = 10, 13, 32
#: Arrow's JSON reader parses blocks of this size on its thread pool, one block per thread: a
#: message of 4 MiB is four blocks (its type inference is unified across blocks).
JSON_BLOCK_BYTES = 1 << 20
#: Threads that parse ``read_arrow``'s JSON pieces: two fetched messages are parsed at once (each
#: by one ``read_json`` call, which releases the GIL), beside the fetch and decode of the next.
#: 0 parses each piece in the caller's thread as it arrives (``bench.frames`` compares the two).
JSON_PARSE_THREADS = 2
#: How many of the first piece's values are inferred first, their types a hint for the pieces
#: that parse before one has finished (~1 ms).
HINT_SAMPLE_VALUES = 1024


class ValueFormatError(ValueError):
    """A value is not in the ``value_format`` asked for; ``partition``/``offset`` say which."""

    def __init__(self, message: str, partition: int | None, offset: int | None) -> None:
        where = f"{partition}/{offset}" if offset is not None else "the range"
        super().__init__(f"value at {where}: {message}")
        self.partition = partition
        self.offset = offset
        self.reason = message


class Formatter:
    """Turns the binary ``value`` column into ``value_format``; keeps an inferred JSON schema
    from one ``iter_arrow`` batch to the next. One caller thread uses it; the JSON pieces it
    parses on its own threads share only ``_piece_hint``, replaced whole (no lock: a piece that
    reads an older hint parses to the same table, a little slower)."""

    def __init__(self, value_format: str, schema: Any, errors: str) -> None:
        if value_format not in FORMATS:
            raise ValueError(f"value_format must be one of {list(FORMATS)}, not {value_format!r}")
        if errors not in ERRORS:
            raise ValueError(f"errors must be one of {list(ERRORS)}, not {errors!r}")
        if value_format != "binary":
            pyarrow(f"value_format={value_format!r}")
        self.value_format = value_format
        self.schema = schema
        self.errors = errors
        self._streaming_schema: Any = None
        #: The types the last JSON piece parsed into: the next piece parses with them as an
        #: explicit schema (other fields still inferred), which saves Arrow most of its inference.
        self._piece_hint: Any = None
        self._parsers: ThreadPoolExecutor | None = None
        self._parsing: deque[Future[Any]] = deque()  # pieces not yet seen done, in fetch order

    @property
    def needs(self) -> tuple[str, ...]:
        """Columns the formatter reads besides ``value`` (to name a bad value)."""
        return () if self.value_format == "binary" else ("partition", "offset")

    def batch(self, batch: Any) -> Any:
        if self.value_format == "binary":
            return batch
        pa = pyarrow()
        table = self._format(pa.Table.from_batches([batch]), streaming=True)
        batches = table.combine_chunks().to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)

    def table(self, table: Any) -> Any:
        if self.value_format == "binary":
            return table
        return self._format(table, streaming=False)

    def piece(self, table: Any) -> Any:
        """One fetched message's records (``read_arrow``): JSON starts parsing at once, on the
        formatter's threads (a ``Future`` of the table), so that parsing overlaps the transfer
        of the next messages and two messages parse at once; other formats wait for ``join``."""
        if self.value_format != "json" or "value" not in table.column_names:
            return table
        if self.schema is None and self._piece_hint is None:  # pieces that parse before any
            self._piece_hint = _sample_hint(pyarrow(), table.column("value"))  # has finished
        if JSON_PARSE_THREADS < 1:
            return self._format(table, streaming=False, hinted=self.schema is None)
        while self._parsing and self._parsing[0].done():  # a bad value raises as soon as
            parsed = self._parsing.popleft()  # its message (and those before it) parsed
            if parsed.exception() is not None:
                self._parsed([parsed])
        if self._parsers is None:
            self._parsers = ThreadPoolExecutor(JSON_PARSE_THREADS,
                                               thread_name_prefix="logstore-frames-json")
        parsing = self._parsers.submit(self._format, table, False, self.schema is None)
        self._parsing.append(parsing)
        return parsing

    def join(self, raw: list[Any], pieces: list[Any], binary_schema: Any) -> Any:
        """The table of every piece (``pieces[i]`` is ``piece(raw[i])``), in order. JSON
        pieces inferred apart are unified (a field missing from one is null there; int64 next
        to double becomes double); when their types cannot be unified (a string next to a
        timestamp), the whole range is parsed again at once, as one inference."""
        pa = pyarrow()
        pieces = self._parsed(pieces)
        if not pieces:
            return self.table(pa.Table.from_batches([], schema=binary_schema))
        if self.value_format != "json" or "value" not in binary_schema.names:
            return self.table(pa.concat_tables(raw))
        try:
            return pa.concat_tables(pieces, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return self.table(pa.concat_tables(raw))

    def _parsed(self, pieces: list[Any]) -> list[Any]:
        """The pieces' tables, in order: the first that failed raises (the rest are dropped)."""
        try:
            return [piece.result() if isinstance(piece, Future) else piece for piece in pieces]
        finally:
            self._parsing.clear()
            if self._parsers is not None:
                self._parsers.shutdown(cancel_futures=True)
                self._parsers = None

    def _format(self, table: Any, streaming: bool, hinted: bool = False) -> Any:
        pa = pyarrow()
        if "value" not in table.column_names:
            return table
        if self.value_format == "utf8":
            parsed, problems = _utf8(pa, table.column("value"))  # chunk by chunk: no copy
            return self._finish(pa, table, parsed, problems)
        values = table.column("value").combine_chunks()
        if self.value_format == "json":
            schema = self.schema
            if streaming and schema is None:
                schema = self._streaming_schema
            parsed, problems = _json(pa, values, schema, ignore_others=schema is not None,
                                     hint=self._piece_hint if hinted else None)
            if hinted and pa.types.is_struct(parsed.type):  # the latest types: a hint that
                self._piece_hint = pa.schema(list(parsed.type))  # failed is replaced
            if streaming and self._streaming_schema is None and self.schema is None:
                self._streaming_schema = pa.schema(list(parsed.type))
        else:
            return self._arrow(pa, table, values)
        return self._finish(pa, table, parsed, problems)

    def _finish(self, pa: Any, table: Any, parsed: Any, problems: dict[int, str]) -> Any:
        if problems and self.errors == "raise":
            row = min(problems)
            raise _error(table, row, problems[row])
        index = table.column_names.index("value")
        table = table.set_column(index, pa.field("value", parsed.type), parsed)
        if self.errors == "null":
            messages: list[str | None] = [None] * table.num_rows
            for row, message in problems.items():
                messages[row] = message
            table = table.append_column(ERROR_COLUMN, pa.array(messages, pa.string()))
        return table

    def _arrow(self, pa: Any, table: Any, values: Any) -> Any:
        ipc = require("pyarrow.ipc", "value_format='arrow'")
        pieces: list[Any] = []
        counts = np.ones(len(values), dtype=np.int64)
        problems: dict[int, str] = {}
        schema = self.schema
        for row, value in enumerate(values.to_pylist()):  # one IPC stream per record
            if value is None:
                pieces.append(None)
                continue
            try:
                read = ipc.open_stream(pa.py_buffer(value)).read_all()
                if schema is None:
                    schema = read.schema
                elif read.schema != schema:
                    raise ValueError(f"its schema {read.schema} differs from {schema}")
            except (pa.ArrowInvalid, ValueError) as exc:
                problems[row] = f"not an Arrow IPC stream of the range's schema: {exc}"
                pieces.append(None)
                continue
            pieces.append(read)
            counts[row] = read.num_rows
        if problems and self.errors == "raise":
            row = min(problems)
            raise _error(table, row, problems[row])
        if schema is None:
            schema = pa.schema([])
        struct_type = pa.struct(list(schema))
        chunks = []
        for piece in pieces:
            if piece is None:
                chunks.append(pa.nulls(1, struct_type))
            else:
                chunks.append(_struct(pa, piece))
        rows = np.repeat(np.arange(len(values)), counts)
        expanded = table.take(pa.array(rows))
        struct = pa.concat_arrays(chunks) if chunks else pa.array([], struct_type)
        index = expanded.column_names.index("value")
        expanded = expanded.set_column(index, pa.field("value", struct_type), struct)
        if self.errors == "null":
            messages: list[str | None] = [problems.get(int(row)) for row in rows]
            expanded = expanded.append_column(ERROR_COLUMN, pa.array(messages, pa.string()))
        return expanded


def _error(table: Any, row: int, message: str) -> ValueFormatError:
    partition = table.column("partition")[row].as_py() if "partition" in table.column_names else None
    offset = table.column("offset")[row].as_py() if "offset" in table.column_names else None
    return ValueFormatError(message, partition, offset)


def _utf8(pa: Any, values: Any) -> tuple[Any, dict[int, str]]:
    try:
        return values.cast(pa.string()), {}
    except pa.ArrowInvalid:
        pass
    problems: dict[int, str] = {}
    for row, value in enumerate(values.to_pylist()):  # only after Arrow refused the batch
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems[row] = f"not UTF-8 ({exc.reason} at byte {exc.start})"
    mask = np.zeros(len(values), dtype=bool)
    mask[list(problems)] = True
    compute = require("pyarrow.compute", "value_format='utf8'")
    cleaned = compute.if_else(pa.array(mask), pa.scalar(None, pa.binary()), values)
    return cleaned.cast(pa.string()), problems


def _offsets(pa: Any, values: Any) -> np.ndarray:
    """The Arrow offsets of a binary or large_binary array, as numpy (a view)."""
    dtype = np.int64 if values.type == pa.large_binary() else np.int32
    return np.frombuffer(values.buffers()[1], dtype=dtype)[values.offset : values.offset + len(values) + 1]


def _lines(pa: Any, values: Any, valid: np.ndarray) -> tuple[Any, int]:
    """The valid values as JSON lines (one buffer) and the longest line's length: one Arrow
    kernel appends the line breaks (``binary_join_element_wise``, one copy); a raw line break
    inside a value (rare: one scan for control bytes says so) becomes a space first."""
    compute = require("pyarrow.compute", "value_format='json'")
    if not valid.all():
        values = values.filter(pa.array(valid))
    if not len(values):
        return pa.py_buffer(b""), 0
    offsets = _offsets(pa, values)
    data_buffer = values.buffers()[2]
    data = (np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
            if data_buffer is not None else np.empty(0, np.uint8))
    if len(data) and data.min() < SPACE:  # a reduction: no temporary array
        breaks = (data == NEWLINE) | (data == CARRIAGE_RETURN)
        if breaks.any():
            cleaned = np.where(breaks, np.uint8(SPACE), data)
            values = pa.Array.from_buffers(values.type, len(values), [
                None, pa.py_buffer(offsets - offsets[0]), pa.py_buffer(cleaned)])
    joined = compute.binary_join_element_wise(values, pa.scalar(b"\n", values.type), b"")
    ends = _offsets(pa, joined)
    lines = joined.buffers()[2].slice(int(ends[0]), int(ends[-1] - ends[0]))
    return lines, int(np.diff(offsets).max())


def _parse(pa: Any, values: Any, valid: np.ndarray, schema: Any, ignore_others: bool) -> Any:
    pa_json = require("pyarrow.json", "value_format='json'")
    buffer, longest = _lines(pa, values, valid)
    parse = pa_json.ParseOptions(
        explicit_schema=schema,
        unexpected_field_behavior="ignore" if ignore_others else "infer",
    )
    read = pa_json.ReadOptions(block_size=max(JSON_BLOCK_BYTES, 2 * longest + 2))
    parsed = pa_json.read_json(pa.BufferReader(buffer), read_options=read, parse_options=parse)
    if parsed.num_rows != int(np.count_nonzero(valid)):
        raise pa.ArrowInvalid(f"{parsed.num_rows} JSON rows for {np.count_nonzero(valid)} values")
    return _struct_chunks(pa, parsed)


def _struct_chunks(pa: Any, table: Any) -> Any:
    """A table's rows as a chunked struct array, one chunk per record batch (Arrow's JSON
    reader gives one a block): its columns' buffers are kept, not copied."""
    if not table.num_columns:
        return _struct(pa, table)
    fields = list(table.schema)
    return pa.chunked_array([pa.StructArray.from_arrays(batch.columns, fields=fields)
                             for batch in table.to_batches()], pa.struct(fields))


def _struct(pa: Any, table: Any) -> Any:
    """A table's rows as one struct array (its columns combined)."""
    if not table.num_columns:
        return pa.array([{}] * table.num_rows, pa.struct([]))
    return pa.StructArray.from_arrays([column.combine_chunks() for column in table.columns],
                                      fields=list(table.schema))


def _sample_hint(pa: Any, column: Any) -> Any:
    """The types Arrow infers from the first ``HINT_SAMPLE_VALUES`` values (fields that are
    only null there left to inference), or None when they do not parse."""
    try:
        parsed, problems = _json(pa, column.slice(0, HINT_SAMPLE_VALUES).combine_chunks(), None, False)
    except ValueFormatError:
        return None
    if problems or not pa.types.is_struct(parsed.type):
        return None
    return pa.schema([field for field in parsed.type if not pa.types.is_null(field.type)])


def _json(pa: Any, values: Any, schema: Any, ignore_others: bool,
          hint: Any = None) -> tuple[Any, dict[int, str]]:
    """The values parsed (a struct array) and the rows that did not parse. ``hint``: types to
    try first as an explicit schema, unknown fields inferred; a value that does not fit them
    (say a double where the hint has int64) makes the values parse again without it, so the
    result is what inference alone gives (``Formatter.join`` unifies the pieces)."""
    lengths = np.diff(_offsets(pa, values))
    not_null = np.asarray(values.is_valid(), dtype=bool) if values.null_count else np.ones(len(values), bool)
    problems: dict[int, str] = {int(row): "an empty value is not JSON"
                                for row in np.flatnonzero(not_null & (lengths == 0))}
    valid = not_null & (lengths > 0)
    if not problems:
        if hint is not None:
            try:
                return _expand(pa, _parse(pa, values, valid, hint, False), valid), {}
            except pa.ArrowInvalid:
                pass
        try:
            return _expand(pa, _parse(pa, values, valid, schema, ignore_others), valid), {}
        except pa.ArrowInvalid as exc:
            failure = str(exc)
    else:
        failure = ""
    for row, value in enumerate(values.to_pylist()):  # only after Arrow refused the batch
        if not valid[row]:
            continue
        try:
            document = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            problems[row] = f"not JSON ({exc})"
            continue
        if not isinstance(document, dict):
            problems[row] = f"a JSON {type(document).__name__}, not an object"
    if not problems:
        raise ValueFormatError(f"Arrow's JSON reader refused the values: {failure}", None, None)
    valid[list(problems)] = False
    try:
        return _expand(pa, _parse(pa, values, valid, schema, ignore_others), valid), problems
    except pa.ArrowInvalid as exc:
        if len(problems) and not valid.any():
            return pa.nulls(len(values), pa.struct([])), problems
        raise ValueFormatError(f"Arrow's JSON reader refused the values: {exc}", None, None) from exc


def _expand(pa: Any, parsed: Any, valid: np.ndarray) -> Any:
    """``parsed`` (one row per valid value) with null rows where the value was not valid."""
    if valid.all():
        return parsed
    rows = np.cumsum(valid) - 1
    return parsed.take(pa.array(rows, mask=~valid))
