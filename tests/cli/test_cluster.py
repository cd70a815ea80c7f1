"""``logstore cluster describe`` and ``topic create --replication-factor`` on a single node."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.broker_fixture import free_port
from tests.cli.conftest import Run


def test_describe_as_json_counts_under_replicated_partitions(
        cli: Callable[..., Run], server: str, topic_name: str) -> None:
    assert cli("topic", "create", topic_name, "--partitions", "2").code == 0
    run = cli("cluster", "describe", "--format", "json", "--server", server)
    assert run.code == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["clustered"] is False
    [broker] = document["brokers"]
    assert broker["stream_port"] > 0  # the broker's Subscribe data channel
    assert broker == {"broker_id": 0, "address": server, "alive": True, "stream_port": broker["stream_port"]}
    assert (document["controller_id"], document["controller_epoch"]) == (0, 0)
    mine = [p for p in document["partitions"] if p["topic"] == topic_name]
    assert [(p["partition"], p["leader_id"], p["replicas"], p["isr"], p["under_replicated"])
            for p in mine] == [(0, 0, [0], [0], False), (1, 0, [0], [0], False)]
    assert document["under_replicated_partitions"] == 0


def test_describe_as_text_through_a_bootstrap_list(cli: Callable[..., Run], server: str,
                                                   topic_name: str) -> None:
    cli("topic", "create", topic_name)
    run = cli("cluster", "describe", "--server", f"127.0.0.1:{free_port()},{server}")
    assert run.code == 0, run.stderr
    text = run.stdout.decode()
    assert text.startswith("single node (a cluster of one)\n")
    assert "controller  0 (epoch 0)" in text and "under-replicated 0" in text
    assert any(line.split()[:3] == ["0", server, "yes"] for line in text.splitlines())
    assert any(line.split()[:6] == [topic_name, "0", "0", "0", "0", "0"]
               for line in text.splitlines())


def test_create_with_a_replication_factor(cli: Callable[..., Run], topic_name: str) -> None:
    run = cli("topic", "create", topic_name, "--partitions", "6", "--replication-factor", "1")
    assert run.code == 0, run.stderr
    refused = cli("topic", "create", f"{topic_name}-3", "--replication-factor", "3")
    assert refused.code == 1 and refused.stderr.startswith("logstore: error: ")
    assert "replication" in refused.stderr
