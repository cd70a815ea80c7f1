"""``logstore consume TOPIC``: print records, one per line.

``--format value`` writes each value as it is (UTF-8 text; a null value is an empty line), a
whole poll per write. ``--format json`` writes one object per record with topic, partition,
offset, timestamp, key, value and headers; a key, value or header value that is not valid UTF-8 is
base64 and flagged (``"value_encoding": "base64"``).

``--from`` is earliest (default), latest, an OFFSET, ``@EPOCH_MS`` or an ISO-8601 time (naive means
local time). Without ``--follow`` the command stops at the end offsets it saw at start, or after
``--max`` records.

``--group G`` consumes as a member of consumer group G: the broker assigns the partitions, each
starts at the group's committed offset (``--from earliest|latest`` when there is none), and the
positions are committed after each batch of records is written (at-least-once: a crash may
print the last batch again). Without ``--follow`` it stops once it holds partitions and has read
them to the end offsets it saw when it got them.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO

from logstore.cli.common import (
    add_server_option,
    non_negative_int,
    positive_int,
    progress,
    server_of,
    stderr_is_terminal,
    stdout_is_terminal,
)

#: How long one poll waits before checking for the end (without --follow) again.
POLL_SECONDS = 0.5


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "consume",
        help="print a topic's records",
        description="Print a topic's records, one per line.",
        epilog="examples: logstore consume orders --from earliest; "
        "logstore consume orders --from 2026-11-27T10:00:00Z --format json; "
        "logstore consume orders --from latest --follow",
    )
    parser.add_argument("topic")
    parser.add_argument("--partition", type=non_negative_int, metavar="P",
                        help="only this partition (default: all)")
    parser.add_argument("--from", dest="start", default="earliest", metavar="WHERE",
                        type=parse_start,
                        help="earliest (default), latest, OFFSET, @EPOCH_MS or ISO-8601 time")
    parser.add_argument("--max", type=positive_int, metavar="N", help="stop after N records")
    parser.add_argument("--follow", action="store_true",
                        help="keep waiting for new records (Ctrl-C to stop)")
    parser.add_argument("--format", choices=["value", "json"], default="value",
                        help="value: the value per line (default); json: one object per record")
    parser.add_argument("--group", metavar="G",
                        help="consume as a member of consumer group G, committing as it goes")
    add_server_option(parser)
    parser.set_defaults(func=run)


def parse_start(text: str) -> str | int | datetime.datetime:
    """earliest | latest -> str; OFFSET -> int; @EPOCH_MS or ISO-8601 -> aware datetime."""
    if text in ("earliest", "latest"):
        return text
    if text.isdigit():
        return int(text)
    if text.startswith("@"):
        try:
            millis = int(text[1:])
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected @EPOCH_MS, got {text!r}") from None
        return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected earliest, latest, an offset, @EPOCH_MS or an ISO-8601 time, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def run(args: argparse.Namespace) -> int:
    from logstore.client import Consumer, TopicPartition

    if args.group is not None:
        return run_group(args)
    start = args.start
    # An explicit offset outside the log is an error; otherwise fall back to the log start.
    reset = "error" if isinstance(start, int) else "earliest"
    out = sys.stdout.buffer
    with Consumer(server_of(args), auto_offset_reset=reset) as consumer:
        if args.partition is None:
            consumer.assign(args.topic)
        else:
            consumer.assign([TopicPartition(args.topic, args.partition)])
        partitions = consumer.assignment()
        if start == "earliest":
            consumer.seek_to_beginning()
        elif start == "latest":
            consumer.seek_to_end()
        elif isinstance(start, int):
            for tp in partitions:
                consumer.seek(tp, start)
        else:
            consumer.seek_to_timestamp(start)
        ends = None if args.follow else consumer.end_offsets()
        remaining = args.max
        if ends is not None:
            ends = {tp: end for tp, end in ends.items() if consumer.position(tp) < end}
            total = sum(end - consumer.position(tp) for tp, end in ends.items())
            if remaining is not None:
                total = min(total, remaining)
        else:
            total = remaining
        show = stderr_is_terminal() and not stdout_is_terminal()
        with progress(total=total, unit="records", enabled=show, description=args.topic) as bar:
            while (ends is None or ends) and (remaining is None or remaining > 0):
                for tp, columns in consumer.poll_columns(timeout=POLL_SECONDS).items():
                    if ends is not None:
                        end = ends.get(tp)
                        if end is None:
                            continue
                        if len(columns) and int(columns.offsets[-1]) >= end:
                            columns = columns.slice(0, int(columns.offsets.searchsorted(end)))
                    if remaining is not None and len(columns) > remaining:
                        columns = columns.slice(0, remaining)
                    if len(columns):
                        write(out, tp, columns, args.format)
                        bar.update(len(columns))
                        if remaining is not None:
                            remaining -= len(columns)
                out.flush()
                if ends is not None:
                    ends = {tp: end for tp, end in ends.items() if consumer.position(tp) < end}
    return 0


def run_group(args: argparse.Namespace) -> int:
    from logstore.client import Consumer

    if args.partition is not None:
        return usage_error("--partition and --group do not mix (the group assigns partitions)")
    if args.start not in ("earliest", "latest"):
        return usage_error("with --group, --from is earliest or latest (where partitions "
                           "without a committed offset start)")
    out = sys.stdout.buffer
    remaining = args.max
    ends: dict[Any, int] = {}
    with Consumer(server_of(args), group_id=args.group, auto_offset_reset=args.start,
                  enable_auto_commit=False) as consumer:

        def assigned(partitions: list[Any]) -> None:
            ends.update(consumer.end_offsets(partitions))

        def revoked(partitions: list[Any]) -> None:
            for tp in partitions:
                ends.pop(tp, None)

        consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
        while remaining is None or remaining > 0:
            polled = consumer.poll_columns(timeout=POLL_SECONDS)
            offsets = {}
            for tp, columns in polled.items():
                if remaining is not None and len(columns) > remaining:
                    offsets[tp] = int(columns.offsets[remaining])  # the first not printed
                    columns = columns.slice(0, remaining)
                if len(columns):
                    write(out, tp, columns, args.format)
                    if remaining is not None:
                        remaining -= len(columns)
            out.flush()
            if polled:
                positions = consumer.position_offsets()
                positions.update(offsets)  # --max cut a partition short
                consumer.commit(positions)
            if not args.follow and ends and all(
                consumer.position(tp) >= end for tp, end in ends.items()
            ):
                break
    return 0


def usage_error(message: str) -> int:
    print(f"logstore consume: error: {message}", file=sys.stderr)
    return 2


def write(out: BinaryIO, tp: Any, columns: Any, fmt: str) -> None:
    if fmt == "value":
        values = columns.values()
        if None in values:
            values = [b"" if value is None else value for value in values]
        out.write(b"\n".join(values))
        out.write(b"\n")
        return
    lines = [json_line(record) for record in columns.records(_Row, tp.topic, tp.partition)]
    out.write("\n".join(lines).encode())
    out.write(b"\n")


class _Row(tuple):  # type: ignore[type-arg]
    """What ``RecordColumns.records`` builds for JSON output (a plain tuple subclass)."""

    __slots__ = ()


def json_line(row: Iterable[Any]) -> str:
    topic, partition, offset, timestamp, key, value, headers = row
    document: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset,
                                "timestamp": timestamp}
    _put(document, "key", key)
    _put(document, "value", value)
    entries = []
    for header_key, header_value in headers:
        entry: dict[str, Any] = {"key": header_key}
        _put(entry, "value", header_value)
        entries.append(entry)
    document["headers"] = entries
    return json.dumps(document, ensure_ascii=False)


def _put(document: dict[str, Any], name: str, data: bytes | None) -> None:
    """``data`` as text, or base64 with ``<name>_encoding: base64`` when it is not UTF-8."""
    if data is None:
        document[name] = None
        return
    try:
        document[name] = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        document[name] = base64.b64encode(data).decode("ascii")
        document[f"{name}_encoding"] = "base64"
