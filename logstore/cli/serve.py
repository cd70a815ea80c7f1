"""``logstore serve``: start a broker."""

from __future__ import annotations

import argparse

from logstore.server.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    DEFAULT_METRICS_LISTEN,
    ServerConfig,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve",
        help="start a broker",
        description="Start a logstore broker. It serves gRPC on --listen and Prometheus metrics on "
        "--metrics-listen, and shuts down cleanly on SIGTERM or SIGINT.",
    )
    parser.add_argument("--data-dir", help=f"data directory (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--listen", metavar="HOST:PORT", help=f"gRPC address (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT",
        help=f"Prometheus /metrics address (default {DEFAULT_METRICS_LISTEN}; '' disables)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see README: Configuration)")
    parser.add_argument("--log-format", choices=["json", "text"], help="log format (default json)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    parser.add_argument("--grace-period", type=float, dest="grace_period_s", metavar="SECONDS",
                        help="time in-flight requests get on shutdown (default 10)")
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="server private key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    parser.add_argument("--security-file", metavar="TOML", help="tokens and ACLs (README: Security)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit codes as the README says: 2 for a bad configuration (a --config file that is missing
    or wrong included), 3 for an unusable data directory."""
    from logstore.cli.common import print_error
    from logstore.errors import InvalidConfigError
    from logstore.server.app import EXIT_CONFIG, serve

    try:
        config = load(args)
    except InvalidConfigError as exc:
        print_error(exc)
        return EXIT_CONFIG
    return serve(config)


def load(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig.load(
        args.config,
        data_dir=args.data_dir,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        log_format=args.log_format,
        log_level=args.log_level,
        grace_period_s=args.grace_period_s,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        security_file=args.security_file,
    )
