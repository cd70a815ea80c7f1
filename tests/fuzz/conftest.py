"""Counts the fuzz cases the suite ran and reports the number in pytest's summary."""

from __future__ import annotations

import pytest

from tests.fuzz import counter


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if counter.CASES:
        terminalreporter.write_line(
            f"fuzz: {sum(counter.CASES.values())} cases run ("
            + ", ".join(f"{kind} {n}" for kind, n in sorted(counter.CASES.items()))
            + ")"
        )
