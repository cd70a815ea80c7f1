"""The cluster torture run, short: 3 etcd members and 3 brokers on loopback, a few faults of
every kind (broker SIGKILL, SIGSTOP, nftables isolation, etcd member SIGKILL) under idempotent
acks=all producers and readers; no anomaly, and every partition's replicas hold the same bytes.
The full run is ``scripts/torture --cluster --faults 50`` (see bench/torture/cluster_run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.torture.checker import ANOMALIES
from tests.broker_fixture import ROOT


def test_cluster_faults_lose_nothing_and_replicas_converge(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.torture", "--cluster", "--json", str(summary_path),
         "--work-dir", str(tmp_path / "work"), "--faults", "4", "--seconds", "12",
         "--partitions", "3",
         "--producers", "2", "--readers", "1", "--rate", "150", "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    summary = json.loads(summary_path.read_text())
    assert summary["anomalies"] == dict.fromkeys(ANOMALIES, 0), result.stdout
    assert summary["faults"]["by_kind"] == {"kill": 1, "pause": 1, "isolate": 1, "etcd_kill": 1}
    assert summary["run"]["drained"]
    assert summary["figures"]["acknowledged"] > 0
    # one reader and the replay read every acknowledged record at least once each
    assert summary["figures"]["read"] >= 2 * summary["figures"]["acknowledged"]
