"""The frames benchmark runs end to end (spawned broker, Redis and NATS) and reports sane numbers;
never a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Goal, Result
from bench.frames import goal_lines

ROOT = Path(__file__).resolve().parents[2]


def test_quick_frames_run_measures_every_workload(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "frames", "--quick", "--json", "out.json", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["group"] for r in results] == (["100 B"] * 9 + ["100 B lz4"] * 2 + ["1 KiB"] * 5
                                             + ["JSON"] * 2
                                             + ["peers"] * 2 + ["memory"] * 2)
    for result in results:
        assert result["records_per_second"] > 0
    assert all(r["params"]["peak_rss_growth_mib"] > 0 for r in results if r["group"] == "memory")
    assert all(r["params"]["client_cpu_ns_per_record"] > 0 for r in results
               if r["group"] in ("100 B", "100 B lz4", "1 KiB", "JSON"))
    assert "100 B: read_arrow / poll_columns" in completed.stdout
    assert "100 B lz4: read_arrow / poll_columns" in completed.stdout
    assert "read_arrow / Redis XRANGE" in completed.stdout
    assert "iter_arrow memory flat" in completed.stdout
    assert "1 KiB: read_arrow's own client CPU" in completed.stdout
    assert "of 9 goals met." in completed.stdout


def result(group: str, name: str, seconds: float, goal: Goal | None = None,
           **params: float) -> Result:
    found = Result("frames", group, name, "run", 1000, 1000.0, [seconds], goal)
    found.params.update(params)
    return found


def test_every_goal_of_a_run_is_a_line_with_yes_or_no() -> None:
    results = [
        result("100 B", "100 B: read_arrow -> pyarrow.Table", 1.0, Goal(min_rate=2000)),
        result("100 B", "100 B: poll_columns() loop (reference)", 0.9),
        result("1 KiB", "1 KiB: read_arrow -> pyarrow.Table", 1.0),
        result("1 KiB", "1 KiB: poll_columns() loop (reference)", 0.5),
        result("peers", "100 B: Redis XRANGE (COUNT 1000) -> pandas.DataFrame", 60.0),
        result("memory", "tenth", 1.0, peak_rss_growth_mib=20.0),
        result("memory", "all", 1.0, peak_rss_growth_mib=30.0),
    ]
    lines = dict(goal_lines(results))
    assert len(lines) == 5
    assert lines["100 B: read_arrow -> pyarrow.Table: >= 2 k/s"] is False
    assert lines["100 B: read_arrow / poll_columns = 90% (>= 80%)"] is True
    assert lines["1 KiB: read_arrow / poll_columns = 50% (>= 80%)"] is False
    assert lines["100 B: read_arrow / Redis XRANGE -> DataFrame = 60x (>= 50x)"] is True
    assert [met for text, met in lines.items() if text.startswith("iter_arrow")] == [True]
