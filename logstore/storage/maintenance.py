"""The maintenance thread of a data directory: interval flushes, checkpoints, retention, compaction.

One pass visits every open partition log: flushes those whose ``flush_interval_ms`` has passed (or
that rolled a segment since the last pass), then, each at its own interval, writes checkpoints,
applies retention and compacts. A job that fails on one log is logged and retried at the next pass;
a full disk (ENOSPC/EDQUOT) is expected and logged as a warning only, and a job on a log whose
topic was deleted meanwhile is dropped quietly.

Locking: the thread runs passes one at a time; ``on_roll`` (called by a log's writer) and
``forget`` (called when a topic is deleted) take ``_rolled_lock``; the bookkeeping dicts are touched
by the pass only, or by ``forget`` under the data directory's topic lock.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logstore.errors import LogClosedError
from logstore.storage.clock import Clock
from logstore.storage.compaction import CompactionResult, compact
from logstore.storage.config import FLUSH_INTERVAL
from logstore.storage.log import PartitionLog
from logstore.storage.retention import RetentionResult, apply_retention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceIntervals:
    """How often the maintenance thread does each job, in milliseconds."""

    tick_ms: int = 50
    checkpoint_interval_ms: int = 10_000
    retention_check_interval_ms: int = 30_000
    compaction_interval_ms: int = 15_000


class Maintenance:
    def __init__(self, logs: Callable[[], Iterable[PartitionLog]], clock: Clock,
                 intervals: MaintenanceIntervals) -> None:
        self._logs = logs
        self.clock = clock
        self.intervals = intervals
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._rolled: set[PartitionLog] = set()
        self._rolled_lock = threading.Lock()
        self._last_flush: dict[PartitionLog, float] = {}
        self._last_compacted: dict[PartitionLog, int] = {}
        self._last_run: dict[str, float] = {}

    @property
    def running(self) -> bool:
        return self._thread is not None

    def on_roll(self, partition_log: PartitionLog) -> None:
        """A segment rolled: flush it at the next pass, whatever the interval."""
        with self._rolled_lock:
            self._rolled.add(partition_log)
        self._wake.set()

    def forget(self, partition_log: PartitionLog) -> None:
        with self._rolled_lock:
            self._rolled.discard(partition_log)
        self._last_flush.pop(partition_log, None)
        self._last_compacted.pop(partition_log, None)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="logstore-maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run(scheduled=True)
            except Exception:
                log.exception("maintenance pass failed")
            self._wake.wait(self.intervals.tick_ms / 1000)
            self._wake.clear()

    def _due(self, job: str, interval_ms: int, now: float, scheduled: bool) -> bool:
        if not scheduled:
            return True
        last = self._last_run.get(job)
        if last is None:
            self._last_run[job] = now
            return False
        if (now - last) * 1000 >= interval_ms:
            self._last_run[job] = now
            return True
        return False

    def run(self, *, scheduled: bool = False) -> dict[str, Any]:
        """One pass of every job; ``scheduled`` = only the jobs whose interval has passed."""
        now = self.clock.monotonic()
        report: dict[str, Any] = {"flushed": 0, "retention": [], "compaction": []}
        with self._rolled_lock:
            rolled, self._rolled = self._rolled, set()
        for partition_log in list(self._logs()):
            if partition_log.closed:
                continue
            due = partition_log in rolled
            if partition_log.config.flush == FLUSH_INTERVAL:
                last = self._last_flush.get(partition_log, 0.0)
                due = due or (now - last) * 1000 >= partition_log.config.flush_interval_ms
            if due and partition_log.recovery_point < partition_log.log_end_offset:
                self._guard(partition_log.flush, partition_log)
                report["flushed"] += 1
            if due:
                self._last_flush[partition_log] = now
        if self._due("checkpoint", self.intervals.checkpoint_interval_ms, now, scheduled):
            for partition_log in list(self._logs()):
                self._guard(partition_log.checkpoint, partition_log)
        if self._due("retention", self.intervals.retention_check_interval_ms, now, scheduled):
            report["retention"] = self.run_retention()
        if self._due("compaction", self.intervals.compaction_interval_ms, now, scheduled):
            report["compaction"] = self.run_compaction()
        return report

    def _guard(self, job: Any, partition_log: PartitionLog) -> Any:
        try:
            return job()
        except LogClosedError:
            return None
        except OSError as exc:
            if partition_log.closed or not partition_log.directory.exists():
                return None  # its topic was deleted while the job ran: nothing left to keep tidy
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.exception("maintenance of %s failed", partition_log)
            else:  # expected while the disk is full; retried at the next pass
                log.warning("maintenance of %s: %s", partition_log, exc)
            return None
        except Exception:
            log.exception("maintenance of %s failed", partition_log)
            return None

    def run_retention(self) -> list[RetentionResult]:
        now_ms = self.clock.now_ms()
        results = []
        for partition_log in list(self._logs()):
            if partition_log.closed:
                continue
            result = self._guard(lambda pl=partition_log: apply_retention(pl, now_ms), partition_log)
            if result is not None and result.deleted_segments:
                results.append(result)
        return results

    def run_compaction(self, *, force: bool = False) -> list[CompactionResult]:
        now_ms = self.clock.now_ms()
        results = []
        for partition_log in list(self._logs()):
            if partition_log.closed or not partition_log.config.compact:
                continue
            sealed_end = partition_log.active_segment.base_offset
            if not force and self._last_compacted.get(partition_log) == sealed_end:
                continue
            result = self._guard(lambda pl=partition_log: compact(pl, now_ms), partition_log)
            if result is not None:
                self._last_compacted[partition_log] = sealed_end
                results.append(result)
        return results


__all__ = ["Maintenance", "MaintenanceIntervals"]
