"""``logstore topic create|list|describe|delete``: topic administration through ``Admin``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from logstore.cli.common import add_server_option, key_value, positive_int, server_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "topic",
        help="create, list, describe and delete topics",
        description="Topic administration.",
    )
    commands = parser.add_subparsers(dest="topic_command", metavar="SUBCOMMAND")
    commands.required = True

    create = commands.add_parser(
        "create", help="create a topic", description="Create a topic.",
        epilog="example: logstore topic create orders --partitions 6 --replication-factor 3 "
               "--config retention_ms=86400000",
    )
    create.add_argument("name", help="topic name: letters, digits, '.', '_', '-'")
    create.add_argument("--partitions", type=positive_int, default=1, metavar="N",
                        help="number of partitions (default 1)")
    create.add_argument("--replication-factor", type=positive_int, default=None, metavar="N",
                        help="copies of each partition on different brokers (a cluster only; "
                             "default: the cluster's default_replication_factor)")
    create.add_argument("--config", type=key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="a topic config key (repeatable)")
    add_server_option(create)
    create.set_defaults(func=create_topic)

    listing = commands.add_parser(
        "list", help="list topics", description="List topics: name and partition count per line."
    )
    listing.add_argument("--internal", action="store_true",
                         help="also list internal topics (__consumer_offsets, ...)")
    listing.add_argument("--format", choices=["text", "json"], default="text",
                         help="output format (default text)")
    add_server_option(listing)
    listing.set_defaults(func=list_topics)

    describe = commands.add_parser(
        "describe", help="show a topic's partitions, offsets and config",
        description="Show a topic's config and, per partition, its offsets, size and segments.",
    )
    describe.add_argument("name")
    describe.add_argument("--format", choices=["text", "json"], default="text",
                          help="output format (default text)")
    add_server_option(describe)
    describe.set_defaults(func=describe_topic)

    delete = commands.add_parser(
        "delete", help="delete a topic and its data", description="Delete a topic and its data."
    )
    delete.add_argument("name")
    add_server_option(delete)
    delete.set_defaults(func=delete_topic)


def create_topic(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        description = admin.create_topic(args.name, args.partitions, dict(args.config),
                                         replication_factor=args.replication_factor)
    print(f"created topic {description.name} with {description.partition_count} partitions")
    return 0


def list_topics(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        topics = admin.list_topics(include_internal=args.internal)
    if args.format == "json":
        json.dump([asdict(topic) for topic in topics], sys.stdout)
        print()
        return 0
    for topic in topics:
        suffix = "\tinternal" if topic.internal else ""
        print(f"{topic.name}\t{topic.partitions}{suffix}")
    return 0


def describe_topic(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        description = admin.describe_topic(args.name)
    if args.format == "json":
        json.dump(asdict(description), sys.stdout)
        print()
        return 0
    print(f"topic       {description.name}")
    print(f"partitions  {description.partition_count}")
    if description.internal:
        print("internal    yes")
    rows = [("partition", "log_start_offset", "log_end_offset", "size_bytes", "segments")]
    for p in description.partitions:
        rows.append((str(p.partition), str(p.log_start_offset), str(p.log_end_offset),
                     str(p.size_bytes), str(p.segments)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    if description.config:
        print("\nconfig")
        width = max(map(len, description.config))
        for key in sorted(description.config):
            print(f"  {key.ljust(width)}  {description.config[key]}")
    return 0


def delete_topic(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        admin.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return 0
