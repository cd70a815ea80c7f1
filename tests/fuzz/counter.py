"""Fuzz cases run so far in this session, by kind (reported by ``conftest.py``)."""

from __future__ import annotations

from collections import Counter

CASES: Counter[str] = Counter()
