"""The cluster benchmark (``scripts/bench cluster --quick``) runs end to end on real etcd, three
real brokers and a real 3-node JetStream cluster, and reports sane numbers for every row. Never a
speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCE = {("logstore", 1, "1"), ("logstore", 1, "all"), ("logstore", 3, "1"),
           ("logstore", 3, "all"), ("nats", 3, "ack")}
CONSUME = {("logstore", 1, ""), ("logstore", 3, ""), ("nats", 3, "")}


def test_quick_cluster_run_measures_every_row_and_cleans_up(tmp_path: Path) -> None:
    work = tmp_path / "work"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "cluster", "--quick", "--json", "out.json",
         "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "LOGSTORE_BENCH_DIR": str(work)},
        capture_output=True, text=True, timeout=150,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    document = json.loads((tmp_path / "out.json").read_text())
    results = document["results"]
    for kind, expected in (("produce", PRODUCE), ("consume", CONSUME)):
        for size in (100, 1024):
            rows = {(r["params"]["system"], r["params"]["factor"], r["params"]["acks"])
                    for r in results if r["params"]["kind"] == kind and r["params"]["size"] == size}
            assert rows == expected, (kind, size)
    for result in results:
        assert all(sample > 0 for sample in result["samples_seconds_per_op"]), result["name"]
        if result["params"]["kind"] != "failover":
            assert result["records_per_second"] > 0 and result["mb_per_second"] > 0
            assert result["params"]["clients"] == 3, result["name"]  # a client per leader/node
    (failover,) = [r for r in results if r["params"]["kind"] == "failover"]
    assert failover["params"]["lease_ttl_ms"] == 2000
    (kill,) = failover["params"]["kills"]
    assert kill["new_leader"] not in (-1, kill["killed_broker"])
    assert 0 < kill["elected_s"] <= kill["acknowledged_s"] == failover["samples_seconds_per_op"][0]
    assert len(document["cluster"]["goals"]) == 4
    assert "goals met" in completed.stdout and "lease 2 s" in completed.stdout
    assert list(work.iterdir()) == []  # every server directory is gone
