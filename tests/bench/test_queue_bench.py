"""The queue benchmark runs end to end (logstore and Redis, small) and reports sane numbers;
never a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_queue_run_measures_every_workload(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "queue", "--quick", "--tasks", "600", "--workers", "1,2",
         "--systems", "redis,logstore", "--json", "out.json", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    names = [r["name"] for r in results]
    assert names[:4] == ["redis: 1 worker", "redis: 2 workers", "logstore: 1 worker", "logstore: 2 workers"]
    assert names[4] == "logstore: fetch round trip (1 workers)"
    assert "redelivery after SIGKILL" in names[5] and len(names) == 6
    assert all(r["records_per_second"] > 0 for r in results)
