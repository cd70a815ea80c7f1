"""``iter_arrow``, ``read_arrow``, ``read_pandas`` and ``read_polars``: a range as a table.

``iter_arrow`` yields Arrow record batches as messages arrive (see ``fetch``: memory stays at a
few messages however long the range); each partition's in offset order, partitions interleaved.
``read_arrow`` collects the messages' tables into one ``pyarrow.Table``, partition by partition,
each in offset order; with ``value_format="json"`` each message is parsed as it arrives
(``values``). Each key and value chunk is one log batch, the other columns one chunk per message
(``log_batches``; short batches gathered by ``columns``), so the buffers are views of the
fetched bytes. A table whose keys or values add up to 2 GiB or more gets that column as
``large_binary`` (int64 offsets; the data buffers are kept), so that ``combine_chunks`` and
friends cannot overflow int32 offsets; ``iter_arrow`` batches always use ``binary``.

Once a table is built, up to twice its size of freed heap stays with the process
(``malloc.keep_freed``), so that the next read of that size reuses those pages instead of
faulting in fresh ones (~1 ms per MiB on a VM).

``read_pandas`` is ``read_arrow(...).to_pandas()`` (keys and values become ``bytes`` objects,
timestamps ``datetime64[ms, UTC]``); ``read_polars`` is ``polars.from_arrow`` of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from logstore.client.config import ISOLATION_LEVELS
from logstore.client.frames import columns as frame_columns
from logstore.client.frames import values as value_formats
from logstore.client.frames.extras import pyarrow, require
from logstore.client.frames.fetch import iter_messages
from logstore.client.frames.log_batches import message_table
from logstore.client.frames.span import Bound, Link, resolve
from logstore.client.malloc import keep_freed

#: Threads that turn fetched messages into Arrow batches, and how many messages may wait for
#: them: decompression (one pyarrow call per log batch) and numpy release the GIL, so a
#: compressed range decodes on several cores while the next messages arrive.
DECODE_THREADS = 2
DECODE_AHEAD_MESSAGES = 2

#: A table column of binary data this large or larger becomes large_binary.
LARGE_BINARY_BYTES = 1 << 31


def _isolation(link: Link, isolation_level: str | None) -> str:
    level = isolation_level or link.config.isolation_level
    if level not in ISOLATION_LEVELS:
        raise ValueError(f"isolation_level must be one of {sorted(ISOLATION_LEVELS)}, not {level!r}")
    return level


def iter_message_tables(
    link: Link, topic: str, partitions: Iterable[int] | None, start: Bound, end: Bound,
    isolation_level: str | None, columns: Sequence[str] | None,
) -> Iterator[tuple[int, Any]]:
    """(partition, the table of one fetched message) with the raw (binary) columns."""
    pyarrow("iter_arrow")
    names = frame_columns.check_columns(columns)
    level = _isolation(link, isolation_level)
    spans = resolve(link, topic, partitions, start, end, ISOLATION_LEVELS[level])
    pending: deque[tuple[int, Future[Any]]] = deque()
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="logstore-frames-decode") as pool:
        for partition, first, stop, message in iter_messages(link, topic, spans, level):
            pending.append((partition, pool.submit(
                message_table, message.records, first, stop, message.aborted_transactions,
                partition, names)))
            while len(pending) > DECODE_AHEAD_MESSAGES or (pending and pending[0][1].done()):
                yield from _decoded(pending.popleft())
        while pending:
            yield from _decoded(pending.popleft())


def _decoded(item: tuple[int, Future[Any]]) -> list[tuple[int, Any]]:
    """[(partition, its table)] of one decoded message, [] when it had no records."""
    partition, decoded = item
    table = decoded.result()
    return [] if table is None else [(partition, table)]


def iter_binary(
    link: Link, topic: str, partitions: Iterable[int] | None, start: Bound, end: Bound,
    isolation_level: str | None, columns: Sequence[str] | None,
) -> Iterator[Any]:
    """(partition, record batch) with the raw (binary) columns."""
    for partition, table in iter_message_tables(link, topic, partitions, start, end,
                                                isolation_level, columns):
        for batch in table.to_batches():
            yield partition, batch


def iter_arrow(
    link: Link, topic: str, partitions: Iterable[int] | None = None, start: Bound = "earliest",
    end: Bound = "latest", isolation_level: str | None = None,
    columns: Sequence[str] | None = None, value_format: str = "binary",
    schema: Any = None, errors: str = "raise",
) -> Iterator[Any]:
    formatter = value_formats.Formatter(value_format, schema, errors)
    names = frame_columns.check_columns(columns)
    inner = _with(names, formatter.needs)
    for _partition, batch in iter_binary(link, topic, partitions, start, end, isolation_level,
                                         inner):
        yield _select(formatter.batch(batch), names)


def read_arrow(
    link: Link, topic: str, partitions: Iterable[int] | None = None, start: Bound = "earliest",
    end: Bound = "latest", isolation_level: str | None = None,
    columns: Sequence[str] | None = None, value_format: str = "binary",
    schema: Any = None, errors: str = "raise",
) -> Any:
    pyarrow("read_arrow")
    formatter = value_formats.Formatter(value_format, schema, errors)
    names = frame_columns.check_columns(columns)
    inner = _with(names, formatter.needs)
    binary_schema = frame_columns.schema(inner)
    by_partition: dict[int, list[tuple[Any, Any]]] = {}
    for partition, raw in iter_message_tables(link, topic, partitions, start, end,
                                              isolation_level, inner):
        by_partition.setdefault(partition, []).append((raw, formatter.piece(raw)))
    ordered = [pair for p in sorted(by_partition) for pair in by_partition[p]]
    table = formatter.join([raw for raw, _ in ordered], [piece for _, piece in ordered],
                           binary_schema)
    keep_freed(sum(raw.nbytes for raw, _ in ordered))  # the next read reuses these pages
    return _select(widen(table), names)


def spans(consumer: Any, topic: str, partitions: Iterable[int] | None = None,
          start: Bound = "earliest", end: Bound = "latest",
          isolation_level: str | None = None) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, stop offset)}`` of a range, as ``read_arrow`` resolves it
    (for a progress bar's total, or to read the same snapshot twice)."""
    link = consumer._link()
    level = _isolation(link, isolation_level)
    return resolve(link, topic, partitions, start, end, ISOLATION_LEVELS[level])


def _with(names: tuple[str, ...], needed: tuple[str, ...]) -> tuple[str, ...]:
    return names + tuple(name for name in needed if name not in names)


def _select(frame: Any, names: tuple[str, ...]) -> Any:
    """Only ``names`` (and the error column), when the formatter needed more."""
    keep = [name for name in frame.schema.names if name in names or name == value_formats.ERROR_COLUMN]
    return frame if keep == frame.schema.names else frame.select(keep)


def widen(table: Any, threshold_bytes: int = LARGE_BINARY_BYTES) -> Any:
    """``key``/``value`` as large_binary when the column holds ``threshold_bytes`` or more
    (the cast writes int64 offsets and keeps each chunk's data buffer)."""
    pa = pyarrow()
    for name in ("key", "value"):
        if name not in table.column_names:
            continue
        column = table.column(name)
        if column.type != pa.binary() or column.nbytes < threshold_bytes:
            continue  # nbytes counts the data and the offsets: less means less data
        size = sum(chunk.buffers()[2].size for chunk in column.chunks if chunk.buffers()[2] is not None)
        if size >= threshold_bytes:
            index = table.column_names.index(name)
            field = table.schema.field(index).with_type(pa.large_binary())
            table = table.set_column(index, field, column.cast(pa.large_binary()))
    return table


def read_pandas(link: Link, topic: str, *args: Any, **options: Any) -> Any:
    require("pandas", "read_pandas")
    return read_arrow(link, topic, *args, **options).to_pandas()


def read_polars(link: Link, topic: str, *args: Any, **options: Any) -> Any:
    polars = require("polars", "read_polars")
    return polars.from_arrow(read_arrow(link, topic, *args, **options))
