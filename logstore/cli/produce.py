"""``logstore produce TOPIC``: one record per stdin line.

Reads stdin in chunks as they arrive (so ``tail -f log | logstore produce t`` streams), splits
them into lines without the trailing newline and hands each chunk's lines to
``Producer.send_batch``. With ``--key-separator`` the part of a line before the first separator is
the key (a line without one is an error, as in Kafka's console producer). Waits for every record to
be acknowledged and exits 1 with the first error if some failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, BinaryIO

from logstore.cli.common import (
    add_server_option,
    non_negative_int,
    progress,
    server_of,
    stderr_is_terminal,
)
from logstore.errors import InvalidRequestError

CHUNK_BYTES = 1 << 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "produce",
        help="produce stdin lines as records",
        description="Produce one record per stdin line (the newline is not part of the value).",
        epilog="example: printf 'alice:2 pizzas\\nbob:1 salad\\n' | "
        "logstore produce orders --key-separator :",
    )
    parser.add_argument("topic")
    parser.add_argument("--key-separator", metavar="SEP",
                        help="the part of each line before the first SEP is the record key")
    parser.add_argument("--partition", type=non_negative_int, metavar="P",
                        help="produce to this partition (default: by key, or sticky)")
    parser.add_argument("--acks", choices=["0", "1", "all"], default="all",
                        help="acknowledgement to wait for (default all)")
    parser.add_argument("--codec", choices=["none", "zstd", "lz4"], default="none",
                        help="batch compression (default none)")
    add_server_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logstore.client import Producer

    if args.key_separator == "":
        raise InvalidRequestError("--key-separator must not be empty", field="key_separator")
    separator = args.key_separator.encode() if args.key_separator is not None else None
    futures: list[Future[Any]] = []
    show = stderr_is_terminal() and not sys.stdin.isatty()
    with Producer(server_of(args), acks=args.acks, codec=args.codec) as producer, \
            progress(total=None, unit="records", enabled=show, description=args.topic) as bar:
        for number, lines in enumerate_chunks(sys.stdin.buffer):
            keys = None
            if separator is not None:
                keys, lines = split_keys(lines, separator, number)
            futures.append(producer.send_batch(args.topic, lines, keys=keys,
                                               partition=args.partition))
            bar.update(len(lines))
            _raise_failed(futures)
        producer.flush()
    _raise_failed(futures, wait=True)
    return 0


def enumerate_chunks(stream: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the complete lines) per chunk read from ``stream``."""
    read = getattr(stream, "read1", stream.read)
    pending = b""
    line_number = 1
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if lines:
            yield line_number, lines
            line_number += len(lines)
    if pending:
        yield line_number, [pending]


def split_keys(
    lines: list[bytes], separator: bytes, first_line: int
) -> tuple[list[bytes], list[bytes]]:
    keys: list[bytes] = []
    values: list[bytes] = []
    for offset, line in enumerate(lines):
        key, found, value = line.partition(separator)
        if not found:
            raise InvalidRequestError(
                f"line {first_line + offset} has no key separator {separator.decode()!r}",
                field="key_separator",
            )
        keys.append(key)
        values.append(value)
    return keys, values


def _raise_failed(futures: list[Future[Any]], wait: bool = False) -> None:
    """Raise the first failure among finished (or, with ``wait``, all) sends."""
    for future in futures:
        if wait or future.done():
            error = future.exception()
            if error is not None:
                raise error
