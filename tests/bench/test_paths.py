"""Path options of scripts/bench and scripts/torture (bench/paths.py): a folder that does not exist
yet is created, a path that cannot be used is one line from argparse, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import paths
from bench.__main__ import SUITES, _parser
from bench.torture.__main__ import parse as parse_torture

ROOT = Path(__file__).resolve().parents[2]
PATH_TYPES = (paths.folder, paths.output_file, paths.input_file)


def test_a_folder_is_created_with_its_parents(tmp_path: Path) -> None:
    assert paths.folder(str(tmp_path / "a" / "b")).is_dir()
    assert paths.folder(str(tmp_path / "a" / "b")).is_dir()  # and an existing one is fine


def test_a_file_where_a_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="exists and is not a folder"):
        paths.folder(str(tmp_path / "file"))
    with pytest.raises(argparse.ArgumentTypeError, match="cannot create the folder"):
        paths.folder(str(tmp_path / "file" / "below"))


def test_an_output_file_gets_its_folder_and_may_not_be_a_folder(tmp_path: Path) -> None:
    target = paths.output_file(str(tmp_path / "results" / "run.json"))
    assert target.parent.is_dir() and not target.exists()
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        paths.output_file(str(tmp_path / "results"))


def test_an_input_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        paths.input_file(str(tmp_path / "history.jsonl"))


def test_every_path_option_of_every_suite_goes_through_bench_paths() -> None:
    checked = []
    for name, suite in SUITES.items():
        parser = _parser([name], [importlib.import_module(suite.module)])
        for action in parser._actions:
            if action.metavar in ("DIR", "FILE"):
                assert action.type in PATH_TYPES, (name, action.option_strings)
                checked.append(action.option_strings[0])
    assert {"--json", "--recovery-dir", "--data-dir", "--work-dir", "--charts"} <= set(checked)


def test_torture_creates_the_folders_its_options_name(tmp_path: Path) -> None:
    options = parse_torture(["--work-dir", str(tmp_path / "w" / "x"),
                             "--history", str(tmp_path / "h" / "history.jsonl"),
                             "--json", str(tmp_path / "j" / "summary.json")])
    assert (tmp_path / "w" / "x").is_dir()
    assert (tmp_path / "h").is_dir() and (tmp_path / "j").is_dir()
    assert options.history == tmp_path / "h" / "history.jsonl"


def test_the_history_checker_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.torture.checker", str(tmp_path / "nope.jsonl")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(f"argument history: {str(tmp_path / 'nope.jsonl')!r} does not exist")
