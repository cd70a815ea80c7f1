"""What every client command shares: ``--server``, error reporting, key=value parsing, progress.

Errors: a command raises ``LogstoreError`` and ``main`` prints ``logstore: error: <message>
(<REASON>)`` on stderr and exits 1; bad arguments go through ``parser.error`` (exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TextIO

from logstore.client.config import (
    DEFAULT_SERVER,
    SERVER_ENV,
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    TOKEN_ENV,
    resolve_server,
)
from logstore.errors import LogstoreError


def add_server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="HOST:PORT[,HOST:PORT...]",
        default=None,
        help=f"broker address, or several bootstrap addresses of a cluster, comma-separated "
             f"(default ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    parser.add_argument("--token", default=None, help=f"bearer token (default ${TOKEN_ENV})")
    parser.add_argument("--tls-ca", metavar="PEM", default=None,
                        help=f"use TLS, trusting this CA (default ${TLS_CA_ENV})")
    parser.add_argument("--tls-cert", metavar="PEM", default=None,
                        help=f"client certificate for mutual TLS (default ${TLS_CERT_ENV})")
    parser.add_argument("--tls-key", metavar="PEM", default=None,
                        help=f"client key for mutual TLS (default ${TLS_KEY_ENV})")


def server_of(args: argparse.Namespace) -> str:
    """The broker address; also hands --token/--tls-* to every client the command opens (they
    read the LOGSTORE_* environment variables when no option is given)."""
    for option, variable in (
        ("token", TOKEN_ENV), ("tls_ca", TLS_CA_ENV), ("tls_cert", TLS_CERT_ENV), ("tls_key", TLS_KEY_ENV)
    ):
        value = getattr(args, option, None)
        if value:
            os.environ[variable] = value
    return resolve_server(args.server)


def format_error(error: LogstoreError) -> str:
    return f"logstore: error: {error.message} ({error.reason})"


def print_error(error: LogstoreError, file: TextIO | None = None) -> None:
    print(format_error(error), file=file or sys.stderr)


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``key=value``."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


def progress(
    *, total: int | None, unit: str, enabled: bool, description: str | None = None
) -> AbstractContextManager[Any]:
    """A tqdm bar on stderr when ``enabled`` (the caller checks for a terminal), else a no-op."""
    if not enabled:
        return nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=description, file=sys.stderr,
                leave=False, dynamic_ncols=True)


class _NoBar:
    def update(self, count: int = 1) -> None:
        pass


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
