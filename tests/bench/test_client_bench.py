"""The client benchmark runs end to end against a spawned broker and reports sane numbers; never
a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_client_run_measures_every_workload(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "client", "--quick", "--json", "out.json", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["group"] for r in results] == (
        ["produce"] * 3 + ["consume"] * 2 + ["1 KiB"] * 3 + ["latency"] * 2 + ["transactions"] * 5)
    for result in results:
        assert result["records_per_second"] > 0
    assert all(r["goal"] is not None for i, r in enumerate(results) if i != 9)  # 9: end-to-end
    for latency in results[8:10]:
        assert 0 < latency["params"]["p50_ms"] <= latency["params"]["p99_ms"]
    assert results[5]["params"]["server_cpu_ms_per_mib"] > 0  # the spawned broker's CPU per MiB
    transactional = results[11:14]
    assert [r["params"]["records_per_transaction"] for r in transactional] == [100, 1_000, 10_000]
    assert all(r["params"]["ratio_to_idempotent"] > 0 for r in transactional)
    end_txn = results[14]
    assert 0 < end_txn["params"]["p50_ms"] <= end_txn["params"]["p99_ms"]
    assert "goals met" in completed.stdout
    assert "Issue 16 scorecard" in completed.stdout
    scorecard = {row["key"]: row for row in json.loads((tmp_path / "out.json").read_text())
                 ["client"]["issue16"]}
    for key in ("e2e-p50-ms", "e2e-p99-ms", "poll-rate", "send-rate", "txn-vs-idempotent",
                "end-txn-p50-ms"):
        assert scorecard[key]["value"] is not None and scorecard[key]["met"] is not None, key
    assert scorecard["consume-vs-redis"]["value"] is None  # Redis runs only in the peers bench
