"""The files ``logstore export`` writes and ``logstore import`` reads, chosen by suffix.

- ``.parquet`` and ``.arrow`` (Arrow IPC file; ``.feather`` too): the ``read_arrow`` columns as
  they are (keys and values binary, headers ``map<string, binary>``), written batch by batch.
- ``.csv`` and ``.jsonl``: text. Keys, values and header values must then be UTF-8 (written as
  strings; a null is an empty unquoted CSV field or JSON ``null``, an empty value ``""``);
  timestamps are ISO-8601 UTC with milliseconds; headers are a JSON array of ``[key, value]``
  pairs (order and repeated keys kept; encoded record by record, and only records that have
  headers cost anything). Export a binary topic to Parquet or Arrow instead.

Each format reads back to the same table it was written from, so export then import then export
gives the same records, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from logstore.client.frames.extras import pyarrow, require
from logstore.errors import InvalidRequestError

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
           ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_COLUMNS = ("key", "value", "headers")


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidRequestError(
            f"{path}: unknown file type {suffix or '(none)'}: use one of {', '.join(sorted(FORMATS))}",
            field="output",
        )
    return FORMATS[suffix]


def _headers_text(pa: Any, column: Any) -> Any:
    """map<string, binary> -> JSON text of [[key, value], ...] ("[]" for none)."""
    lengths = np.diff(np.asarray(column.offsets))
    texts = np.full(len(column), "[]", dtype=object)
    for row in np.flatnonzero(lengths > 0).tolist():  # only records that have headers
        pairs = [[k, None if v is None else v.decode("utf-8")] for k, v in column[row].as_py()]
        texts[row] = json.dumps(pairs, ensure_ascii=False)
    return pa.array(texts.tolist(), pa.string())


def to_text(batch: Any) -> Any:
    """A read_arrow batch with key, value and headers as strings (UTF-8 checked)."""
    pa = pyarrow("export to text")
    arrays, fields = [], []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if field.name == "headers":
            column = _headers_text(pa, column)
        elif field.name in ("key", "value"):
            try:
                column = column.cast(pa.string())
            except pa.ArrowInvalid as exc:
                raise InvalidRequestError(
                    f"a {field.name} is not UTF-8, which CSV and JSONL cannot hold: export to "
                    f".parquet or .arrow instead ({exc})", field="output"
                ) from exc
        arrays.append(column)
        fields.append(pa.field(field.name, column.type, field.nullable))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class Writer:
    """Writes record batches to ``path`` in its format; ``close`` finishes the file."""

    def __init__(self, path: str | Path) -> None:
        self.kind = format_of(path)
        self.path = Path(path)
        self._writer: Any = None
        self._text: Any = None

    def write(self, batch: Any) -> None:
        pa = pyarrow("export")
        if self.kind in ("csv", "jsonl"):
            batch = to_text(batch)
        if self.kind == "jsonl":
            from logstore.client.frames.write import json_lines

            if self._text is None:
                self._text = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            lengths, data = json_lines(pa.Table.from_batches([batch]))
            self._text.write(np.insert(data, np.cumsum(lengths), ord("\n")).tobytes())
            return
        if self._writer is None:
            if self.kind == "parquet":
                parquet = require("pyarrow.parquet", "export to Parquet")
                self._writer = parquet.ParquetWriter(self.path, batch.schema)
            elif self.kind == "arrow":
                self._writer = pa.ipc.new_file(str(self.path), batch.schema)
            else:
                csv = require("pyarrow.csv", "export to CSV")
                self._writer = csv.CSVWriter(str(self.path), batch.schema)
        self._writer.write_batch(batch)

    def close(self, empty: Any) -> None:
        """Finish the file (``empty``: a zero-row batch, written when nothing was)."""
        if self._writer is None and self._text is None:
            self.write(empty)
        if self._writer is not None:
            self._writer.close()
        if self._text is not None:
            self._text.close()


def _headers_map(pa: Any, column: Any) -> Any:
    texts = column.to_pylist()
    maps = [[] if not text or text == "[]" else
            [(k, None if v is None else v.encode("utf-8")) for k, v in json.loads(text)]
            for text in texts]  # headers are rare; "[]" costs one comparison
    return pa.array(maps, pa.map_(pa.string(), pa.binary()))


def read(path: str | Path) -> Any:
    """The table in ``path``, with key/value binary and headers a map again."""
    pa = pyarrow("import")
    kind = format_of(path)
    if kind == "parquet":
        table = require("pyarrow.parquet", "import from Parquet").read_table(path)
    elif kind == "arrow":
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    else:
        types = {name: pa.string() for name in TEXT_COLUMNS}
        types["timestamp"] = pa.timestamp("ms", tz="UTC")
        if kind == "csv":
            csv = require("pyarrow.csv", "import from CSV")
            table = csv.read_csv(path, convert_options=csv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False))
        else:
            pa_json = require("pyarrow.json", "import from JSONL")
            header = json.loads(Path(path).open("rb").readline() or b"{}")
            schema = pa.schema([(name, types.get(name, pa.int64())) for name in header])
            table = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=schema))
        for name in TEXT_COLUMNS:
            if name in table.column_names:
                index = table.column_names.index(name)
                column = (_headers_map(pa, table.column(name)) if name == "headers"
                          else table.column(name).cast(pa.binary()))
                table = table.set_column(index, pa.field(name, column.type), column)
    return table
