"""scripts/cluster (scripts/local_cluster.py): up starts real etcd and brokers, down stops them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc

from logstore.api.v1 import admin_pb2, cluster_pb2, logstore_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_cluster.py"), *args],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )


def joined_metadata(stub: logstore_pb2_grpc.LogStoreStub) -> cluster_pb2.MetadataResponse:
    """Metadata, once the broker has joined (it answers UNAVAILABLE while it is joining)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return stub.Metadata(cluster_pb2.MetadataRequest(), timeout=20, wait_for_ready=True)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.1)


def test_up_starts_a_cluster_and_down_stops_it(tmp_path):
    directory = tmp_path / "local"
    started = run("up", "--brokers", "1", "--etcd", "1", "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stderr
        assert "cluster up in" in started.stdout
        state = json.loads((directory / "cluster.json").read_text())
        (broker,) = state["brokers"]
        with grpc.insecure_channel(broker["address"]) as channel:
            stub = logstore_pb2_grpc.LogStoreStub(channel)
            answer = joined_metadata(stub)
        assert answer.clustered and [b.broker_id for b in answer.brokers] == [1]
        assert "running" in run("status", "--dir", str(directory)).stdout
        host = broker["address"].rpartition(":")[0]
        with urllib.request.urlopen(f"http://{host}:7071/", timeout=10) as page:
            overview = page.read().decode()
        assert "Under-replicated partitions" in overview and broker["address"] in overview
        with grpc.insecure_channel(broker["address"]) as channel:
            logstore_pb2_grpc.LogStoreStub(channel).CreateTopic(
                admin_pb2.CreateTopicRequest(name="seen", partitions=1), timeout=20)
        with urllib.request.urlopen(f"http://{host}:7071/topics/seen", timeout=10) as page:
            topic_page = page.read().decode()
        assert "broker 1" in topic_page  # the leader, from the cluster's metadata
    finally:
        stopped = run("down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert not (directory / "cluster.json").exists()


def test_down_without_a_cluster_says_so(tmp_path):
    result = run("down", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "no cluster found" in result.stderr
