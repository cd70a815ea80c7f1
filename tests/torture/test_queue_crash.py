"""The queue-mode crash test, short: worker processes on a share group while the broker and the
workers are SIGKILLed; the checker must find nothing lost, nothing accepted twice and no
redelivery without a lock expiry, release or crash. The full run is ``scripts/torture --queue``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.queue_crash.checker import ANOMALIES
from tests.broker_fixture import ROOT


def test_kills_lose_no_task_and_accept_none_twice(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.queue_crash", "--kills", "3", "--seconds", "6", "--tasks", "1200",
         "--workers", "3", "--broker-share", "0.67", "--seed", "7", "--json", str(summary_path),
         "--work-dir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    summary = json.loads(summary_path.read_text())
    assert summary["anomalies"] == dict.fromkeys(ANOMALIES, 0), result.stdout
    assert summary["kills"]["broker"] >= 1
    figures = summary["figures"]
    assert figures["accepted"] + figures["accepted_unconfirmed"] + figures["dead_lettered"] >= figures["tasks"]
    assert figures["dead_lettered"] >= 1200 // 50  # the poison tasks
