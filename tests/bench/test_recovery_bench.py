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
         "--recovery-dir", str(tmp_path / "not" / "yet"), "--json", "out.json", "--no-progress"],
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
