"""``logstore import TOPIC FILE...``: the rows of Parquet, Arrow, CSV or JSONL files as records.

The columns ``logstore export`` writes are used when present: ``value`` (required), ``key``
(key partitioning), ``timestamp``, ``headers``, and ``partition`` (each row goes back to its
partition; ``--by-key`` ignores it and routes by key, or sticky without keys). ``offset`` is
ignored: the broker assigns offsets. Files are sent in the order given, each with
``Producer.send_arrow``, and the command waits until every record is acknowledged.
"""

from __future__ import annotations

import argparse

from logstore.cli.common import add_server_option, progress, server_of, stderr_is_terminal
from logstore.errors import InvalidRequestError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "import",
        help="send the rows of Parquet, Arrow, CSV or JSONL files as records",
        description="Send the rows of exported files to a topic (needs logstore[arrow]).",
        epilog="example: logstore import orders-copy orders.parquet",
    )
    parser.add_argument("topic")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--by-key", action="store_true",
                        help="ignore the partition column: partition by key (sticky without)")
    add_server_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logstore.cli.table_files import read
    from logstore.client import Producer

    tables = [(path, read(path)) for path in args.files]
    for path, table in tables:
        if "value" not in table.column_names:
            raise InvalidRequestError(f"{path} has no value column ({table.column_names})",
                                      field="files")
    total = sum(table.num_rows for _path, table in tables)
    with Producer(server_of(args)) as producer, progress(
        total=total, unit="records", enabled=stderr_is_terminal(), description=args.topic
    ) as bar:
        for _path, table in tables:
            names = table.column_names
            future = producer.send_arrow(
                args.topic, table, value="value",
                key="key" if "key" in names else None,
                timestamp="timestamp" if "timestamp" in names else None,
                headers="headers" if "headers" in names else None,
                partition="partition" if "partition" in names and not args.by_key else None,
            )
            future.result()
            bar.update(table.num_rows)
    return 0
