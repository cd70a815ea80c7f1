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
        description="Start a logstore broker. It serves gRPC on --listen and Prometheus metrics and "
        "the web console on --metrics-listen, and shuts down cleanly on SIGTERM or SIGINT.",
    )
    parser.add_argument("--data-dir", help=f"data directory (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--listen", metavar="HOST:PORT", help=f"gRPC address (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT",
        help=f"HTTP address of /metrics and the web console (default {DEFAULT_METRICS_LISTEN}; '' disables)",
    )
    parser.add_argument("--no-console", dest="console", action="store_false", default=None,
                        help="serve only /metrics on --metrics-listen, not the web console")
    parser.add_argument("--console-writes", dest="console_writes", action="store_true", default=None,
                        help="without --security-file: let the console create/delete topics, reset "
                        "offsets and produce test records (default read-only)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see README: Configuration)")
    parser.add_argument("--log-format", choices=["json", "text"], help="log format (default json)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    parser.add_argument("--grace-period", type=float, dest="grace_period_s", metavar="SECONDS",
                        help="time in-flight requests get on shutdown (default 10)")
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="server private key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    parser.add_argument("--security-file", metavar="TOML", help="tokens and ACLs (README: Security)")
    parser.add_argument("--cluster", metavar="etcd://HOST:PORT,...",
                        help="join a cluster whose metadata lives in these etcd members (README: Cluster)")
    parser.add_argument("--broker-id", type=int, metavar="N", help="this broker's id in the cluster (0 or more)")
    parser.add_argument("--advertise", metavar="HOST:PORT",
                        help="address other brokers and clients use (default: --listen)")
    parser.add_argument("--cluster-name", metavar="NAME", help="cluster name in etcd (default 'default')")
    parser.add_argument("--replica-port", type=int, metavar="PORT",
                        help="port of the followers' replica data channel on the --advertise host "
                        "(default 0: an ephemeral port; -1: none, followers fetch over gRPC)")
    parser.add_argument("--stream-port", type=int, metavar="PORT",
                        help="port of the table reads' Subscribe data channel on the --listen host "
                        "(default 0: an ephemeral port; -1: none, they read over gRPC)")
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
        console=args.console,
        console_writes=args.console_writes,
        log_format=args.log_format,
        log_level=args.log_level,
        grace_period_s=args.grace_period_s,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        security_file=args.security_file,
        cluster=args.cluster,
        broker_id=args.broker_id,
        advertise=args.advertise,
        cluster_name=args.cluster_name,
        replica_port=args.replica_port,
        stream_port=args.stream_port,
    )
