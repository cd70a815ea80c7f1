"""``logstore cluster describe``: the brokers, the controller and where every partition lives."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from logstore.cli.common import add_server_option, server_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "cluster",
        help="describe the cluster: brokers, controller, partition leaders and replicas",
        description="The cluster's brokers and placement of partitions.",
    )
    commands = parser.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    commands.required = True
    describe = commands.add_parser(
        "describe", help="brokers, controller, and every partition's leader, replicas and ISR",
        description="Print the brokers (id, address, alive, stream port), the controller (id, epoch) and, per "
                    "partition (internal topics included), the leader, leader epoch, replicas "
                    "and in-sync replicas, with the number of under-replicated partitions (ISR "
                    "shorter than the replica list). A single-node broker is a cluster of one.",
        epilog="example: logstore cluster describe --server h1:7070,h2:7070 --format json",
    )
    describe.add_argument("--format", choices=["text", "json"], default="text",
                          help="output format (default text)")
    add_server_option(describe)
    describe.set_defaults(func=describe_cluster)


def describe_cluster(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(server_of(args)) as admin:
        cluster = admin.describe_cluster()
    if args.format == "json":
        document = asdict(cluster)
        document["under_replicated_partitions"] = cluster.under_replicated_partitions
        for placement, item in zip(cluster.partitions, document["partitions"], strict=True):
            item["under_replicated"] = placement.under_replicated
        json.dump(document, sys.stdout)
        print()
        return 0
    name = f" {cluster.cluster_name}" if cluster.cluster_name else ""
    kind = "cluster" if cluster.clustered else "single node (a cluster of one)"
    print(f"{kind}{name}")
    print(f"controller  {cluster.controller_id} (epoch {cluster.controller_epoch})")
    print(f"brokers     {len(cluster.brokers)}")
    print(f"partitions  {len(cluster.partitions)}, "
          f"under-replicated {cluster.under_replicated_partitions}")
    print()
    _table([("broker", "address", "alive", "stream port")] + [
        (str(b.broker_id), b.address, "yes" if b.alive else "NO", str(b.stream_port or "-"))
        for b in cluster.brokers
    ])
    print()
    _table([("topic", "partition", "leader", "epoch", "replicas", "isr", "")] + [
        (p.topic, str(p.partition), str(p.leader_id) if p.leader_id >= 0 else "none",
         str(p.leader_epoch), ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)),
         "under-replicated" if p.under_replicated else "")
        for p in cluster.partitions
    ])
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
