"""Fixtures of the in-process broker suite (the helpers themselves are in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.storage import DataDir


@pytest.fixture
def data_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A bare data directory (no broker), for the coordinator and assignor tests."""
    store = DataDir.open(tmp_path / "data", background=False)
    yield store
    store.close()
