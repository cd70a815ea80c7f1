"""The frames benchmark runs end to end (spawned broker, Redis and NATS) and reports sane numbers;
never a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_frames_run_measures_every_workload(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "frames", "--quick", "--json", "out.json", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["group"] for r in results] == (["100 B"] * 6 + ["1 KiB"] * 2 + ["JSON"]
                                             + ["peers"] * 2 + ["memory"] * 2)
    for result in results:
        assert result["records_per_second"] > 0
    assert all(r["params"]["peak_rss_growth_mib"] > 0 for r in results if r["group"] == "memory")
    assert "read_arrow / poll_columns at 100 B" in completed.stdout
    assert "read_arrow / Redis XRANGE" in completed.stdout
