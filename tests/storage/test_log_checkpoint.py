"""log.py's checkpoint file: the periodic write happens outside the writer lock, and a checkpoint
taken earlier never replaces one taken later. The slow disk is a wrapper of
``atomic_write_json`` that waits until the test lets it go."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from logstore.storage import log as log_module
from logstore.storage.log import CHECKPOINT_FILE

from .helpers import fill


class SlowDisk:
    """``atomic_write_json`` whose first write waits for ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._write = log_module.atomic_write_json
        self._first = True
        monkeypatch.setattr(log_module, "atomic_write_json", self)

    def __call__(self, path: Any, value: Any, **kwargs: Any) -> None:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.release.wait(10)
        self._write(path, value, **kwargs)


def test_an_append_does_not_wait_for_the_periodic_checkpoint_write(open_log, monkeypatch):
    partition_log = open_log()
    fill(partition_log, 2)
    disk = SlowDisk(monkeypatch)
    writer = threading.Thread(target=partition_log.checkpoint)
    writer.start()
    assert disk.entered.wait(10)  # the checkpoint is writing (its fsyncs, on a busy disk)
    appended = threading.Thread(target=fill, args=(partition_log, 1))
    appended.start()
    appended.join(5)
    try:
        assert not appended.is_alive()  # the append did not queue behind the file write
    finally:
        disk.release.set()
        writer.join(10)
        appended.join(10)
    assert partition_log.log_end_offset == 3


def test_a_checkpoint_taken_earlier_never_replaces_a_later_one(open_log, log_dir, monkeypatch):
    partition_log = open_log()
    fill(partition_log, 2)
    partition_log.flush()
    disk = SlowDisk(monkeypatch)
    writer = threading.Thread(target=partition_log.checkpoint)  # takes recovery point 2
    writer.start()
    assert disk.entered.wait(10)
    fill(partition_log, 3)
    closing = threading.Thread(target=partition_log.close)  # takes recovery point 5, waits
    closing.start()
    disk.release.set()
    writer.join(10)
    closing.join(10)
    assert json.loads((log_dir / CHECKPOINT_FILE).read_text()) == {
        "log_start_offset": 0, "recovery_point": 5,
    }


def test_a_periodic_checkpoint_of_a_closed_log_writes_nothing(open_log, log_dir):
    partition_log = open_log()
    fill(partition_log, 1)
    partition_log.close()
    (log_dir / CHECKPOINT_FILE).unlink()
    partition_log.checkpoint()
    assert not (log_dir / CHECKPOINT_FILE).exists()
