"""``logstore export TOPIC --output FILE``: a range of a topic into a Parquet, Arrow, CSV or JSONL
file, batch by batch (memory stays flat), partition after partition, each in offset order, with a
progress bar on a terminal.

``--from``/``--to`` are earliest, latest, an OFFSET, ``@EPOCH_MS`` or an ISO-8601 time (``--to``
is exclusive; default earliest to latest). The columns are ``read_arrow``'s: partition, offset,
timestamp, key, value, headers (``--columns`` picks some). See ``table_files`` for the formats.
"""

from __future__ import annotations

import argparse
from typing import Any

from logstore.cli.common import add_server_option, progress, server_of, stderr_is_terminal
from logstore.cli.consume import parse_start


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="write a range of a topic to a Parquet, Arrow, CSV or JSONL file",
        description="Write the records of a topic range to a file (needs logstore[arrow]).",
        epilog="example: logstore export orders --from 2026-12-01T00:00:00Z "
        "--to 2026-12-02T00:00:00Z --output orders.parquet",
    )
    parser.add_argument("topic")
    parser.add_argument("--from", dest="start", default="earliest", type=parse_start,
                        metavar="WHERE", help="earliest (default), latest, OFFSET, @EPOCH_MS or ISO-8601")
    parser.add_argument("--to", dest="end", default="latest", type=parse_start, metavar="WHERE",
                        help="where to stop, exclusive (default latest: the end now)")
    parser.add_argument("--output", "-o", required=True, metavar="FILE",
                        help="FILE.parquet, FILE.arrow, FILE.csv or FILE.jsonl")
    parser.add_argument("--partitions", metavar="P,P", default=None,
                        help="only these partitions (default: all)")
    parser.add_argument("--columns", metavar="C,C", default=None,
                        help="only these columns (partition,offset,timestamp,key,value,headers)")
    parser.add_argument("--isolation-level", choices=("read_uncommitted", "read_committed"),
                        default="read_committed", help="default read_committed")
    add_server_option(parser)
    parser.set_defaults(func=run)


def _numbers(text: str | None) -> list[int] | None:
    return None if text is None else [int(item) for item in text.split(",") if item]


def run(args: argparse.Namespace) -> int:
    from logstore.cli.table_files import Writer, format_of
    from logstore.client import Consumer
    from logstore.client.frames import columns as frame_columns
    from logstore.client.frames import read

    format_of(args.output)
    names = frame_columns.check_columns(args.columns.split(",") if args.columns else None)
    with Consumer(server_of(args), isolation_level=args.isolation_level) as consumer:
        spans = read.spans(consumer, args.topic, _numbers(args.partitions), args.start, args.end)
        total = sum(max(0, stop - first) for first, stop in spans.values())
        writer = Writer(args.output)
        try:
            with progress(total=total, unit="records", enabled=stderr_is_terminal(),
                          description=args.topic) as bar:
                for partition, (first, stop) in sorted(spans.items()):  # a file in offset order
                    for batch in consumer.iter_arrow(args.topic, [partition], start=first,
                                                     end=stop, columns=names):
                        writer.write(batch)
                        bar.update(batch.num_rows)
        finally:
            writer.close(_empty(names))
    return 0


def _empty(names: tuple[str, ...]) -> Any:
    from logstore.client.frames import columns as frame_columns
    from logstore.client.frames.extras import pyarrow

    pa = pyarrow("export")
    schema = frame_columns.schema(names)
    return pa.RecordBatch.from_arrays([pa.array([], field.type) for field in schema], schema=schema)
