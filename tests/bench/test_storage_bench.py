"""The storage benchmark runs end to end and reports sane numbers; never a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"encode", "decode", "validate", "append", "read", "index"}


def run_bench(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_quick_storage_run_writes_positive_throughput_for_every_workload(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    completed = run_bench(
        "storage", "--quick", "--json", "tmp.json", "--data-dir", str(data_dir),
        "--no-progress", tmp_path=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert "records/s" in completed.stdout

    document = json.loads((tmp_path / "tmp.json").read_text())
    assert document["machine"]["cores"] >= 1
    assert document["machine"]["numpy"]
    results = document["results"]
    assert {result["group"] for result in results} == GROUPS
    for result in results:
        name = result["name"]
        assert result["records_per_second"] > 0, name
        assert result["median_seconds_per_op"] > 0, name
        assert all(sample > 0 for sample in result["samples_seconds_per_op"]), name
        if result["mb_per_second"] is not None:
            assert result["mb_per_second"] > 0, name
        if result["goal"] is not None:
            assert isinstance(result["met"], bool), name
    assert list(data_dir.iterdir()) == []  # the temporary data directory is gone


def test_filter_runs_only_matching_workloads(tmp_path: Path) -> None:
    completed = run_bench(
        "storage", "--quick", "--filter", "index", "--json", "index.json",
        "--data-dir", str(tmp_path / "data"), tmp_path=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "index.json").read_text())["results"]
    assert [result["group"] for result in results] == ["index", "index"]


def test_unknown_suite_is_refused_with_the_list_of_suites(tmp_path: Path) -> None:
    completed = run_bench("nonesuch", tmp_path=tmp_path)
    assert completed.returncode == 2
    assert "storage" in completed.stderr
