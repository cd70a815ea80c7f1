"""The recovery benchmark runs end to end on a little data and reports sane numbers; never a
speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_recovery_run_restarts_and_fetches_the_end(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "recovery", "--quick", "--recovery-gb", "0.02",
         "--recovery-dir", str(tmp_path / "not" / "yet"), "--json", "out.json", "--no-progress",
         "--filter", "dirty", "--filter", "cached", "--filter", "cold"],  # not the history rows
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["params"].get("data") for r in results] == [None, *["dirty", "cached", "cold"] * 2]
    for result in results:
        assert result["median_seconds_per_op"] > 0
    assert results[1]["params"]["records"] == 20_000
    assert not list((tmp_path / "not" / "yet").glob("logstore-bench-recovery-*"))  # cleaned up


def test_quick_history_run_starts_from_snapshots_and_replays_without(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "recovery", "--quick", "--filter", "history",
         "--history-commits", "0,3000", "--history-groups", "10", "--history-transactions", "300",
         "--recovery-dir", str(tmp_path), "--json", "out.json", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [(r["params"]["commits"], r["params"]["transactions"]) for r in results] == [
        (0, 0), (3000, 0), (0, 300),
    ]
    with_commits = results[1]["params"]
    assert with_commits["no_snapshot_records"] == 3000  # the start without snapshots replayed all
    assert with_commits["live_offsets"] == 100
    assert with_commits["vs_empty"] > 0
    assert results[2]["params"]["no_snapshot_records"] == 1 + 300 * 3
    assert "start-up to SERVING with a history" in completed.stdout
    assert not list(tmp_path.glob("logstore-bench-recovery-*"))  # cleaned up
