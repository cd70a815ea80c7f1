"""The torture run, short: a real broker SIGKILLed (and paused) under idempotent producers and
group consumers, with the unsynced tail of segments damaged after each kill; the history checker
must find no anomaly. The full run is ``scripts/torture --kills 50 ...`` (see bench/torture)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.torture.checker import ANOMALIES
from tests.broker_fixture import ROOT


def torture(tmp_path: Path, *args: str) -> dict:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.torture", "--json", str(summary_path),
         "--work-dir", str(tmp_path / "work"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    summary = json.loads(summary_path.read_text())
    assert summary["anomalies"] == dict.fromkeys(ANOMALIES, 0), result.stdout
    return summary


def test_kills_with_page_cache_loss_lose_nothing_acknowledged(tmp_path: Path) -> None:
    summary = torture(tmp_path, "--kills", "3", "--seconds", "12", "--page-cache-loss",
                      "--producers", "2", "--consumers", "2", "--partitions", "3")
    assert summary["nemesis"]["kills_survived"] == 3
    assert summary["nemesis"]["drained"]
    assert summary["figures"]["acknowledged"] > 0
    assert summary["figures"]["read"] >= summary["figures"]["acknowledged"]


def test_transactions_no_aborted_reads(tmp_path: Path) -> None:
    summary = torture(tmp_path, "--kills", "2", "--seconds", "10", "--transactions",
                      "--producers", "1", "--consumers", "1", "--partitions", "2")
    assert summary["nemesis"]["kills_survived"] == 2
    assert summary["figures"]["transactions_aborted"] > 0
    assert summary["figures"]["transactions_committed"] > 0
