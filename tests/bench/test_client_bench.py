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
    assert [r["group"] for r in results] == (["produce"] * 3 + ["consume"] * 2 + ["1 KiB"] * 2
                                             + ["latency"] * 2)
    for result in results:
        assert result["records_per_second"] > 0
    assert all(r["goal"] is not None for r in results[:-1])
    for latency in results[-2:]:
        assert 0 < latency["params"]["p50_ms"] <= latency["params"]["p99_ms"]
    assert "goals met" in completed.stdout
    assert "Issue 16 scorecard" in completed.stdout
    scorecard = {row["key"]: row for row in json.loads((tmp_path / "out.json").read_text())
                 ["client"]["issue16"]}
    for key in ("e2e-p50-ms", "e2e-p99-ms", "poll-rate", "send-rate"):
        assert scorecard[key]["value"] is not None and scorecard[key]["met"] is not None, key
    assert scorecard["consume-vs-redis"]["value"] is None  # Redis runs only in the peers bench
