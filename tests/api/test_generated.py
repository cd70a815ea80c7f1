"""The committed generated code matches what scripts/gen-proto makes from proto/ today."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ, LOGSTORE_PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), "--out", str(tmp_path)], check=True, env=env)
    fresh = tmp_path / "logstore" / "api" / "v1"
    committed = ROOT / "logstore" / "api" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if p.name.endswith((".py", ".pyi")) and p.name != "__init__.py")
    assert generated, "gen-proto produced nothing"
    missing = [name for name in generated if not (committed / name).exists()]
    assert not missing, f"generated files not committed: {missing}; run scripts/gen-proto"
    stale = [name for name in generated if not filecmp.cmp(fresh / name, committed / name, shallow=False)]
    assert not stale, f"generated code is stale: {stale}; run scripts/gen-proto"


def test_every_proto_has_generated_code() -> None:
    protos = sorted(p.stem for p in (ROOT / "proto" / "logstore" / "api" / "v1").glob("*.proto"))
    for stem in protos:
        assert (ROOT / "logstore" / "api" / "v1" / f"{stem}_pb2.py").exists(), stem
