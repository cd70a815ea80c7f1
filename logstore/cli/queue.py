"""``logstore queue list|describe|consume|reset|config``: share groups (queue mode).

``describe GROUP`` prints the group's config and members, then one row per partition: start
offset, available (including records not fetched yet), acquired, archived, the oldest
unacknowledged age, redeliveries and dead-lettered records. ``consume TOPIC --group G`` prints
each acquired record's value on a line (``--format json``: one JSON object per record with topic,
partition, offset, delivery_count, key and value) and acknowledges it with ``--ack`` (accept by
default; release or reject); it stops after ``--max`` records or ``--timeout`` seconds without
one, and leaves the group. ``reset GROUP --topic T --to earliest|latest|OFFSET`` needs no record
acquired. ``config GROUP --set key=value --reset key`` changes the group's knobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from logstore.cli.common import (
    add_server_option,
    key_value,
    non_negative_int,
    positive_int,
    server_of,
)
from logstore.cli.group import print_table

if TYPE_CHECKING:
    from logstore.client.share_admin import ShareGroupDescription


def _target(text: str) -> str | int:
    if text in ("earliest", "latest"):
        return text
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected earliest, latest or an offset, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "queue", help="share groups (queue mode): list, describe, consume, reset, config",
        description="Share groups: any number of members take records one by one from the same "
        "partitions and acknowledge each.",
    )
    commands = parser.add_subparsers(dest="queue_command", metavar="SUBCOMMAND")
    commands.required = True

    listing = commands.add_parser("list", help="list share groups",
                                  description="Share groups: name, active members, acquired records.")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    add_server_option(listing)
    listing.set_defaults(func=list_groups)

    describe = commands.add_parser("describe", help="config, members and per-partition state")
    describe.add_argument("group")
    describe.add_argument("--format", choices=["text", "json"], default="text")
    add_server_option(describe)
    describe.set_defaults(func=describe_group)

    consume = commands.add_parser(
        "consume", help="acquire records, print and acknowledge them",
        epilog="example: logstore queue consume tasks --group workers --ack release --max 10",
    )
    consume.add_argument("topic")
    consume.add_argument("--group", required=True)
    consume.add_argument("--ack", choices=["accept", "release", "reject"], default="accept",
                         help="how each printed record is acknowledged (default accept)")
    consume.add_argument("--max", type=positive_int, default=None, metavar="N",
                         help="stop after N records")
    consume.add_argument("--timeout", type=float, default=2.0, metavar="S",
                         help="stop after S seconds without a record (default 2)")
    consume.add_argument("--lock-ms", type=non_negative_int, default=0,
                         help="lock of acquired records (default: the group's)")
    consume.add_argument("--format", choices=["text", "json"], default="text")
    add_server_option(consume)
    consume.set_defaults(func=consume_records)

    reset = commands.add_parser("reset", help="move a share group's start offset",
                                epilog="example: logstore queue reset workers --topic tasks --to latest")
    reset.add_argument("group")
    reset.add_argument("--topic", required=True)
    reset.add_argument("--partition", type=non_negative_int, action="append", default=[], metavar="P",
                       help="only this partition (repeatable; default: all)")
    reset.add_argument("--to", required=True, type=_target, metavar="WHERE",
                       help="earliest, latest or OFFSET")
    add_server_option(reset)
    reset.set_defaults(func=reset_group)

    config = commands.add_parser(
        "config", help="set or reset a share group's config (creates the group)",
        epilog="keys: lock_ms, max_deliveries, backoff (e.g. 1s,5s,30s), dead_letter_topic, "
        "max_acquired_records, auto_offset_reset",
    )
    config.add_argument("group")
    config.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    config.add_argument("--reset", action="append", default=[], metavar="KEY")
    add_server_option(config)
    config.set_defaults(func=configure)


def list_groups(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        groups = admin.list_share_groups()
    if args.format == "json":
        json.dump([asdict(g) for g in groups], sys.stdout)
        print()
        return 0
    for group in groups:
        print(f"{group.group_id}\t{group.members}\t{group.acquired}")
    return 0


def _print_description(description: ShareGroupDescription) -> None:
    print(f"group     {description.group_id}")
    print("config    " + " ".join(f"{k}={v}" for k, v in sorted(description.config.items())))
    print(f"members   {len(description.members)}")
    for member_id, _, acquired in description.members:
        print(f"  {member_id}: {acquired} acquired")
    rows = [("topic", "partition", "start", "available", "acquired", "archived", "oldest_ms",
             "redeliveries", "dead_lettered")]
    for p in description.partitions:
        rows.append((p.topic, str(p.partition), str(p.start_offset), str(p.available), str(p.acquired),
                     str(p.archived),
                     str(p.oldest_unacknowledged_age_ms) if p.oldest_unacknowledged_age_ms >= 0 else "-",
                     str(p.redeliveries), str(p.dead_lettered)))
    print()
    print_table(rows)


def describe_group(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        description = admin.describe_share_group(args.group)
    if args.format == "json":
        json.dump(asdict(description), sys.stdout)
        print()
        return 0
    _print_description(description)
    return 0


def consume_records(args: argparse.Namespace) -> int:
    from logstore.client import ShareConsumer

    printed = 0
    with ShareConsumer(server_of(args), args.group, [args.topic], lock_ms=args.lock_ms,
                       max_records=min(args.max or 500, 500)) as consumer:
        while args.max is None or printed < args.max:
            limit = 500 if args.max is None else args.max - printed
            records = consumer.poll(timeout=args.timeout, max_records=limit)
            if not records:
                break
            for record in records:
                if args.format == "json":
                    print(json.dumps({
                        "topic": record.topic, "partition": record.partition, "offset": record.offset,
                        "delivery_count": record.delivery_count,
                        "key": None if record.key is None else record.key.decode(errors="replace"),
                        "value": None if record.value is None else record.value.decode(errors="replace"),
                    }))
                else:
                    sys.stdout.buffer.write((record.value or b"") + b"\n")
            sys.stdout.flush()
            consumer.acknowledge(records, args.ack)
            printed += len(records)
        consumer.commit()
    return 0


def reset_group(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        states = admin.reset_share_group(args.group, args.topic, args.to, partitions=args.partition)
    rows = [("topic", "partition", "start", "log_end_offset")]
    rows += [(s.topic, str(s.partition), str(s.start_offset), str(s.log_end_offset)) for s in states]
    print_table(rows)
    return 0


def configure(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        description = admin.alter_share_group_config(args.group, dict(args.set), args.reset)
    for key, value in sorted(description.config.items()):
        print(f"{key}={value}")
    return 0
