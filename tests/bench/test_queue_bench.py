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
    assert names[:4] == ["redis: 1 worker, batch 1000", "redis: 2 workers, batch 1000",
                         "logstore: 1 worker, batch 1000, prefetch 1", "logstore: 2 workers, batch 1000, prefetch 1"]
    assert names[4].startswith("logstore: fetch+ack round trip at ") and "paced 10 k" in names[4]
    assert "spread phases" in names[4]
    assert "redelivery after SIGKILL" in names[5] and len(names) == 6
    assert all(r["records_per_second"] > 0 for r in results)
    # (the server's CPU is counted in clock ticks of 10 ms: a small run may show none)
    assert all(r["params"]["worker_cpu_us_per_task"] > 0 and r["params"]["server_cpu_us_per_task"] >= 0
               for r in results[:4])
    # (to the last acknowledgement, and to the end with the idle tail: never less)
    assert all(r["params"]["worker_cpu_total_us_per_task"] >= r["params"]["worker_cpu_us_per_task"]
               and r["params"]["server_cpu_total_us_per_task"] >= r["params"]["server_cpu_us_per_task"]
               for r in results[:4])
    assert "CPU per task" in completed.stdout
    # polls that returned tasks: per second and tasks per poll (a worker's first poll counted too)
    assert all(r["params"]["polls"] >= 1 and 0 < r["params"]["tasks_per_poll"] <= 1000 for r in results[2:5])
