"""Fixtures shared by the records and storage suites: a movable clock and partition logs on tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logstore.storage import LogConfig, ManualClock, PartitionLog

#: Small segments and an index entry per batch, so a few appends span several segments.
TINY = LogConfig(segment_bytes=4096, index_interval_bytes=0, segment_index_bytes=1024)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "topic-0"


@pytest.fixture
def open_log(log_dir: Path, clock: ManualClock) -> Iterator[Callable[..., PartitionLog]]:
    """``open_log(config=TINY)`` opens (or reopens) the partition log in ``log_dir``.

    Every log it opened and nobody closed or abandoned is closed at teardown.
    """
    opened: list[PartitionLog] = []

    def factory(config: LogConfig = TINY, directory: Path | None = None) -> PartitionLog:
        partition_log = PartitionLog.open(
            directory or log_dir, topic="topic", partition=0, config=config, clock=clock
        )
        opened.append(partition_log)
        return partition_log

    yield factory
    for partition_log in opened:
        if not partition_log.closed:
            partition_log.close()
