"""``logstore group list|describe|reset-offsets|delete``: consumer groups through ``Admin``.

``describe`` prints the group's state and members, then one row per partition: topic,
partition, committed offset ("-" when none), log end offset, lag, and the member that owns it.
``--format json`` prints the same as one document. ``reset-offsets --to`` takes earliest, latest,
an OFFSET, ``@EPOCH_MS`` or an ISO-8601 time, like ``consume --from``; the group must have no
members.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from logstore.cli.common import add_server_option, non_negative_int, server_of
from logstore.cli.consume import parse_start


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "group",
        help="list, describe, reset and delete consumer groups",
        description="Consumer group administration.",
    )
    commands = parser.add_subparsers(dest="group_command", metavar="SUBCOMMAND")
    commands.required = True

    listing = commands.add_parser(
        "list", help="list groups",
        description="List consumer groups: name, state and member count per line.",
    )
    listing.add_argument("--format", choices=["text", "json"], default="text",
                         help="output format (default text)")
    add_server_option(listing)
    listing.set_defaults(func=list_groups)

    describe = commands.add_parser(
        "describe", help="show members, assignment, committed offsets and lag",
        description="Show a group's members and, per partition, the committed offset, the log "
        "end offset, the lag and the owning member.",
    )
    describe.add_argument("group")
    describe.add_argument("--format", choices=["text", "json"], default="text",
                          help="output format (default text)")
    add_server_option(describe)
    describe.set_defaults(func=describe_group)

    reset = commands.add_parser(
        "reset-offsets", help="move an inactive group's committed offsets",
        description="Move the committed offsets of a group with no members.",
        epilog="examples: logstore group reset-offsets billing --topic orders --to earliest; "
        "logstore group reset-offsets billing --topic orders --to 2026-11-27T10:00:00Z",
    )
    reset.add_argument("group")
    reset.add_argument("--topic", required=True)
    reset.add_argument("--partition", type=non_negative_int, action="append", default=[],
                       metavar="P", help="only this partition (repeatable; default: all)")
    reset.add_argument("--to", required=True, type=parse_start, metavar="WHERE",
                       help="earliest, latest, OFFSET, @EPOCH_MS or ISO-8601 time")
    reset.add_argument("--dry-run", action="store_true",
                       help="print the new offsets without committing them")
    add_server_option(reset)
    reset.set_defaults(func=reset_offsets)

    delete = commands.add_parser(
        "delete", help="delete a group and its committed offsets",
        description="Delete a consumer group with no members, and its committed offsets.",
    )
    delete.add_argument("group")
    add_server_option(delete)
    delete.set_defaults(func=delete_group)


def list_groups(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        groups = admin.list_groups()
    if args.format == "json":
        json.dump([asdict(group) for group in groups], sys.stdout)
        print()
        return 0
    for group in groups:
        print(f"{group.group_id}\t{group.state}\t{group.members}")
    return 0


def describe_group(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        description = admin.describe_group(args.group)
    owners: dict[tuple[str, int], str] = {
        (tp[0], tp[1]): m.member_id for m in description.members for tp in m.assignment
    }
    if args.format == "json":
        document: dict[str, Any] = asdict(description)
        for offset in document["offsets"]:
            offset["member_id"] = owners.get((offset["topic"], offset["partition"]), "")
        json.dump(document, sys.stdout)
        print()
        return 0
    print(f"group     {description.group_id}")
    print(f"state     {description.state}")
    if description.assignor:
        print(f"assignor  {description.assignor}")
    print(f"members   {len(description.members)}")
    for member in description.members:
        static = f" (instance {member.instance_id})" if member.instance_id else ""
        owned = ", ".join(f"{t}/{p}" for t, p in member.assignment) or "-"
        print(f"  {member.member_id}{static} epoch {member.member_epoch}: {owned}")
    rows = [("topic", "partition", "committed", "log_end_offset", "lag", "member")]
    for offset in description.offsets:
        rows.append((
            offset.topic, str(offset.partition),
            str(offset.offset) if offset.offset >= 0 else "-",
            str(offset.log_end_offset), str(offset.lag),
            owners.get((offset.topic, offset.partition), "-"),
        ))
    print()
    print_table(rows)
    return 0


def reset_offsets(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    target: Any = args.to
    if isinstance(target, datetime.datetime):
        target = ("timestamp", int(target.timestamp() * 1000))
    with Admin(server_of(args)) as admin:
        offsets = admin.reset_offsets(args.group, args.topic, target,
                                      partitions=args.partition, dry_run=args.dry_run)
    rows = [("topic", "partition", "new_offset", "log_end_offset", "lag")]
    for offset in offsets:
        rows.append((offset.topic, str(offset.partition), str(offset.offset),
                     str(offset.log_end_offset), str(offset.lag)))
    print_table(rows)
    if args.dry_run:
        print("(dry run: nothing committed)")
    return 0


def delete_group(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        admin.delete_group(args.group)
    print(f"deleted group {args.group}")
    return 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
