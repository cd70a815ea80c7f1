"""docs/embedded.md runs as written: every Python block, each in a fresh working directory, with
its asserts as the documented behaviour."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embedded.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_document_has_its_examples():
    assert len(BLOCKS) >= 7


def test_the_readme_links_the_document():
    section = (ROOT / "README.md").read_text().split("## Embedded storage API", 1)[1].split("\n## ", 1)[0]
    assert "docs/embedded.md" in section


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_example_runs(code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
