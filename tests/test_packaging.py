"""pyproject.toml builds without setuptools deprecation warnings (every bootstrap builds it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_string_with_its_files_and_a_setuptools_that_knows_it() -> None:
    project = PYPROJECT["project"]
    assert isinstance(project["license"], str)  # a TOML table is deprecated (builds stop in 2027)
    for pattern in project["license-files"]:
        assert list(ROOT.glob(pattern)), pattern
    [setuptools] = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.split(";")[0].strip())
    assert minimum and int(minimum.group(1)) >= 77, setuptools  # PEP 639 fields came in 77.0

