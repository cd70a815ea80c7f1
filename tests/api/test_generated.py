"""The committed generated code matches what scripts/gen-proto makes from proto/ today."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Every package scripts/gen-proto writes into.
GENERATED_PACKAGES = ["logstore/api/v1", "logstore/cluster/etcd"]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ, LOGSTORE_PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), "--out", str(tmp_path)], check=True, env=env)
    for package in GENERATED_PACKAGES:
        fresh = tmp_path / package
        committed = ROOT / package
        generated = sorted(p.name for p in fresh.iterdir() if p.name.endswith((".py", ".pyi")) and p.name != "__init__.py")
        assert generated, f"gen-proto produced nothing in {package}"
        missing = [name for name in generated if not (committed / name).exists()]
        assert not missing, f"generated files not committed: {missing}; run scripts/gen-proto"
        stale = [name for name in generated if not filecmp.cmp(fresh / name, committed / name, shallow=False)]
        assert not stale, f"generated code is stale: {stale}; run scripts/gen-proto"


@pytest.mark.parametrize("package", GENERATED_PACKAGES)
def test_every_proto_has_generated_code(package: str) -> None:
    protos = sorted(p.stem for p in (ROOT / "proto" / package).glob("*.proto"))
    assert protos, package
    for stem in protos:
        assert (ROOT / package / f"{stem}_pb2.py").exists(), stem
