"""``logstore``: the command-line entry point. Each command lives in its own module and registers
itself in ``COMMANDS`` as (name, module); a module provides ``add_parser(subparsers)`` which sets
``func`` on its parser. Errors print ``logstore: error: <message> (<REASON>)`` on stderr and exit 1;
argument errors exit 2. gRPC's own log lines below ERROR (a failed TLS handshake is logged at INFO)
are off unless ``GRPC_VERBOSITY`` says otherwise, so that an error is the one line above.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: (command name, module under logstore.cli). Order is the order of --help.
COMMANDS: list[tuple[str, str]] = [
    ("serve", "serve"),
    ("topic", "topic"),
    ("produce", "produce"),
    ("consume", "consume"),
    ("group", "group"),
    ("cluster", "cluster"),
    ("queue", "queue"),
    ("token", "token"),
    ("export", "export"),
    ("import", "load"),
]


# before grpc is imported: its C core reads this once
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstore",
        description="logstore: a Kafka-style append-only log and stream store, served over gRPC.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for _name, module_name in COMMANDS:
        try:
            module = importlib.import_module(f"logstore.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"logstore.cli.{module_name}":
                continue  # a command still being written
            raise
        module.add_parser(subparsers)
    return parser


def _version() -> str:
    from logstore import __version__

    return f"logstore {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from logstore.errors import LogstoreError

    try:
        result = args.func(args)
    except LogstoreError as exc:
        print(f"logstore: error: {exc.message} ({exc.reason})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
