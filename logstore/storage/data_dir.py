"""A data directory: named topics, their partition logs, and the thread that keeps them tidy.

This is the embedded API: open a directory in-process, create topics, append, read, close — no
server needed. The broker uses exactly this. Layout::

    data/
      .lock                 flock()ed while a process has the directory open
      topics.json           every topic: partitions, config overrides (replaced atomically)
      orders-0/             one partition log per folder: <topic>-<partition>  (log.py)
      orders-1/
      old-0.1f3a.deleting/  a deleted topic's folder on its way out

Topic names match ``[A-Za-z0-9._-]{1,249}`` and are not ``.`` or ``..``, so a name can never reach
outside the directory. A topic is created by making its folders, then listing it in topics.json;
deleted by unlisting it, then removing its folders — a crash in between leaves folders that the
next open removes.

Locking: ``_lock`` guards the topic table (create, delete, add partitions, alter config); the
table is a dict replaced whole, so lookups take no lock. Each partition log has its own writer
lock (see ``PartitionLog``). The maintenance thread (flush by interval, checkpoints, retention,
compaction, maintenance.py) runs its passes one at a time.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logstore.errors import (
    DiskFullError,
    InvalidNameError,
    InvalidRequestError,
    LimitExceededError,
    LogClosedError,
    StorageError,
    TopicExistsError,
    UnknownPartitionError,
    UnknownTopicError,
)
from logstore.records import BatchHeader
from logstore.storage.clock import SYSTEM_CLOCK, Clock
from logstore.storage.compaction import CompactionResult
from logstore.storage.config import LogConfig
from logstore.storage.files import atomic_write_json, read_json, storage_error
from logstore.storage.log import AppendResult, PartitionLog, ReadResult
from logstore.storage.maintenance import Maintenance, MaintenanceIntervals
from logstore.storage.retention import RetentionResult

log = logging.getLogger(__name__)

TOPICS_FILE = "topics.json"
LOCK_FILE = ".lock"
DELETING_SUFFIX = ".deleting"
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,249}")


def validate_topic_name(name: object, kind: str = "topic") -> str:
    """Return ``name`` if it is a legal topic (or group) name, else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{kind} name must be a string", name=repr(name), kind=kind)
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidNameError(
            f"invalid {kind} name {shown!r}: use 1 to 249 of the characters A-Z a-z 0-9 . _ - "
            f"(and not '.' or '..')",
            name=shown,
            kind=kind,
        )
    return name


@dataclass(frozen=True)
class Limits:
    max_topics: int = 10_000
    max_partitions_per_topic: int = 1_000


@dataclass
class Topic:
    name: str
    config: LogConfig
    logs: list[PartitionLog]
    internal: bool = False

    @property
    def partitions(self) -> int:
        return len(self.logs)


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segments: int


@dataclass(frozen=True)
class TopicDescription:
    name: str
    config: LogConfig
    internal: bool
    partitions: list[PartitionDescription] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)


class DataDir:
    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        defaults: LogConfig,
        limits: Limits,
        intervals: MaintenanceIntervals,
    ) -> None:
        self.path = path
        self.clock = clock
        self.defaults = defaults
        self.limits = limits
        self.intervals = intervals
        self._lock = threading.RLock()
        self._topics: dict[str, Topic] = {}
        self._lock_file: int | None = None
        self.maintenance = Maintenance(self.logs, clock, intervals)
        self._append_listeners: list[Callable[[PartitionLog], None]] = []
        self.closed = False

    # -- opening and closing -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock = SYSTEM_CLOCK,
        defaults: LogConfig | None = None,
        limits: Limits | None = None,
        intervals: MaintenanceIntervals | None = None,
        background: bool = True,
    ) -> DataDir:
        """Open (creating if needed) the data directory at ``path`` and every topic in it.

        ``background`` starts the maintenance thread (interval flushes, checkpoints, retention,
        compaction); without it, call ``run_maintenance()`` yourself.
        """
        directory = Path(path)
        if not directory.exists() and not directory.parent.is_dir():
            raise StorageError(
                f"cannot create data directory {directory}: its parent {directory.parent} does "
                f"not exist (is the disk mounted?)",
                errno=errno.ENOENT,
                path=str(directory),
            )
        try:
            directory.mkdir(exist_ok=True)
            lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot use data directory {directory}: {exc.strerror or exc}",
                errno=exc.errno,
                path=str(directory),
            ) from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise StorageError(
                f"data directory {directory} is in use by another process",
                errno=exc.errno,
                path=str(directory),
            ) from exc
        if not os.access(directory, os.W_OK):
            os.close(lock_fd)
            raise StorageError(
                f"data directory {directory} is not writable", errno=errno.EACCES, path=str(directory)
            )
        instance = cls(
            directory,
            clock=clock,
            defaults=defaults or LogConfig(),
            limits=limits or Limits(),
            intervals=intervals or MaintenanceIntervals(),
        )
        instance._lock_file = lock_fd
        try:
            instance._load()
        except BaseException as exc:
            instance._close_logs(clean=False)
            os.close(lock_fd)
            if isinstance(exc, OSError):  # e.g. a full disk while recovery writes
                where = f"data directory {directory}" + (f" ({exc.filename})" if exc.filename else "")
                raise storage_error(exc, f"open {where}", exc.filename or directory) from exc
            raise
        if background:
            instance.start()
        return instance

    def _load(self) -> None:
        table = self._read_table()
        topics: dict[str, Topic] = {}
        for name, entry in sorted(table.items()):
            config = LogConfig.from_dict(entry.get("config") or {}, base=self.defaults)
            partitions = int(entry.get("partitions", 1))
            logs = [self._open_log(name, p, config) for p in range(partitions)]
            topics[name] = Topic(name, config, logs, bool(entry.get("internal", False)))
        self._topics = topics
        self._remove_strays()

    def _read_table(self) -> dict[str, Any]:
        path = self.path / TOPICS_FILE
        if path.exists():
            try:
                return dict(read_json(path).get("topics", {}))
            except (ValueError, AttributeError, TypeError) as exc:
                raise StorageError(
                    f"{path} is unreadable ({exc}); restore it, or remove it to adopt the topic "
                    f"folders found in {self.path} with the default config",
                    path=str(path),
                ) from exc
        # no table: adopt partition folders found on disk with the default config
        found: dict[str, int] = {}
        for entry in os.listdir(self.path):
            parsed = _parse_partition_dir(entry)
            if parsed and (self.path / entry).is_dir():
                found[parsed[0]] = max(found.get(parsed[0], 0), parsed[1] + 1)
        if found:
            log.warning("no %s in %s; adopting topics found on disk: %s", TOPICS_FILE, self.path, sorted(found))
        return {name: {"partitions": count, "config": {}} for name, count in found.items()}

    def _remove_strays(self) -> None:
        for entry in os.listdir(self.path):
            full = self.path / entry
            if entry.endswith(DELETING_SUFFIX) and full.is_dir():
                shutil.rmtree(full, ignore_errors=True)
                continue
            parsed = _parse_partition_dir(entry)
            if parsed is None or not full.is_dir():
                continue
            topic = self._topics.get(parsed[0])
            if topic is None or parsed[1] >= topic.partitions:
                log.warning("removing %s: no such topic partition in %s", full, TOPICS_FILE)
                shutil.rmtree(full, ignore_errors=True)
        if not (self.path / TOPICS_FILE).exists():
            self._write_table()

    def _open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        partition_log = PartitionLog.open(
            self.path / f"{topic}-{partition}",
            topic=topic,
            partition=partition,
            config=config,
            clock=self.clock,
            on_roll=self.maintenance.on_roll,
        )
        for listener in self._append_listeners:
            partition_log.add_listener(listener)
        return partition_log

    def add_append_listener(self, listener: Callable[[PartitionLog], None]) -> None:
        """Call ``listener(log)`` after every append to any partition, now or created later."""
        self._append_listeners.append(listener)
        for partition_log in self.logs():
            partition_log.add_listener(listener)

    def _write_table(self, topics: dict[str, Topic] | None = None) -> None:
        table = {
            name: {
                "partitions": topic.partitions,
                "config": topic.config.overrides(self.defaults),  # reopened over self.defaults
                "internal": topic.internal,
            }
            for name, topic in (self._topics if topics is None else topics).items()
        }
        atomic_write_json(self.path / TOPICS_FILE, {"version": 1, "topics": table})

    def _replace_table(self, topics: dict[str, Topic], action: str) -> None:
        """Write ``topics`` to topics.json, then make it the table. If the write fails (a full
        disk: DiskFullError) the table is unchanged, on disk and in memory."""
        try:
            self._write_table(topics)
        except OSError as exc:
            raise storage_error(exc, action, self.path / TOPICS_FILE) from exc
        self._topics = topics

    def _discard_logs(self, logs: list[PartitionLog]) -> None:
        """Close and remove partition logs that never made it into the table."""
        for partition_log in logs:
            partition_log.abandon()
            shutil.rmtree(partition_log.directory, ignore_errors=True)

    def close(self) -> None:
        """Stop maintenance, flush and cleanly close every partition, release the directory."""
        if self.closed:
            return
        self.stop()
        with self._lock:
            self._close_logs(clean=True)
            self.closed = True
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    def _close_logs(self, *, clean: bool) -> None:
        for topic in self._topics.values():
            for partition_log in topic.logs:
                try:
                    if clean:
                        partition_log.close()
                    else:
                        partition_log.abandon()
                except Exception:
                    log.exception("closing %s", partition_log)

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- topics -------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: dict[str, Any] | LogConfig | None = None,
        *,
        internal: bool = False,
    ) -> TopicDescription:
        validate_topic_name(name)
        if name.startswith("__") and not internal:
            raise InvalidNameError(
                f"topic names starting with '__' are reserved for internal topics: {name!r}",
                name=name,
            )
        if not isinstance(partitions, int) or partitions < 1:
            raise LimitExceededError(
                f"a topic needs at least 1 partition, not {partitions}",
                limit_name="min_partitions",
                limit=1,
            )
        if partitions > self.limits.max_partitions_per_topic and not internal:
            raise LimitExceededError(
                f"{partitions} partitions exceed max_partitions_per_topic="
                f"{self.limits.max_partitions_per_topic}",
                limit_name="max_partitions_per_topic",
                limit=self.limits.max_partitions_per_topic,
            )
        log_config = config if isinstance(config, LogConfig) else LogConfig.from_dict(config, base=self.defaults)
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicExistsError(name)
            user_topics = sum(1 for topic in self._topics.values() if not topic.internal)
            if not internal and user_topics >= self.limits.max_topics:  # internal ones are free
                raise LimitExceededError(
                    f"max_topics={self.limits.max_topics} reached",
                    limit_name="max_topics",
                    limit=self.limits.max_topics,
                )
            for p in range(partitions):
                stale = self.path / f"{name}-{p}"
                if stale.exists():
                    shutil.rmtree(stale)
            logs: list[PartitionLog] = []
            try:
                for p in range(partitions):
                    logs.append(self._open_log(name, p, log_config))
                topics = dict(self._topics)
                topics[name] = Topic(name, log_config, logs, internal)
                self._replace_table(topics, f"create topic {name!r}")
            except (OSError, StorageError) as exc:  # a full disk: the topic is not created
                self._discard_logs(logs)
                if isinstance(exc, OSError):
                    raise storage_error(exc, f"create topic {name!r}", self.path / name) from exc
                raise
        log.info("created topic %s with %d partitions", name, partitions)
        return self.describe_topic(name)

    def delete_topic(self, name: str) -> None:
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            topics = dict(self._topics)
            del topics[name]
            try:
                self._replace_table(topics, f"delete topic {name!r}")
            except DiskFullError:
                # Not a page left for the new table: free the topic's space first, then write it.
                # Should that fail too, the next table write drops the topic from topics.json;
                # until then a restart would bring it back, empty.
                log.warning("disk full: removing the data of topic %s before unlisting it", name)
                self._topics = topics
                self._remove_partitions(topic)
                try:
                    self._write_table()
                except OSError as exc:
                    log.error("deleted topic %s, but could not rewrite %s: %s", name, TOPICS_FILE, exc)
            else:
                self._remove_partitions(topic)
        log.info("deleted topic %s", name)

    def _remove_partitions(self, topic: Topic) -> None:
        for partition_log in topic.logs:
            try:
                partition_log.close()
            except OSError as exc:  # its checkpoint cannot be written: irrelevant now
                log.warning("closing %s: %s", partition_log, exc)
            self.maintenance.forget(partition_log)
            target = partition_log.directory.with_name(
                f"{partition_log.directory.name}.{uuid.uuid4().hex[:8]}{DELETING_SUFFIX}"
            )
            os.replace(partition_log.directory, target)
            shutil.rmtree(target, ignore_errors=True)

    def add_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow ``name`` to ``total`` partitions (partitions are never removed)."""
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            if total <= topic.partitions:
                raise InvalidRequestError(
                    f"topic {name!r} already has {topic.partitions} partitions; "
                    f"the new count must be larger, not {total}",
                    field="total",
                    partitions=topic.partitions,
                )
            if total > self.limits.max_partitions_per_topic:
                raise LimitExceededError(
                    f"{total} partitions exceed max_partitions_per_topic="
                    f"{self.limits.max_partitions_per_topic}",
                    limit_name="max_partitions_per_topic",
                    limit=self.limits.max_partitions_per_topic,
                )
            new_logs: list[PartitionLog] = []
            try:
                for p in range(topic.partitions, total):
                    new_logs.append(self._open_log(name, p, topic.config))
                topics = dict(self._topics)
                topics[name] = dataclasses.replace(topic, logs=[*topic.logs, *new_logs])
                self._replace_table(topics, f"add partitions to topic {name!r}")
            except (OSError, StorageError) as exc:  # a full disk: no partition is added
                self._discard_logs(new_logs)
                if isinstance(exc, OSError):
                    raise storage_error(exc, f"add partitions to topic {name!r}", self.path) from exc
                raise
        return self.describe_topic(name)

    def alter_config(self, name: str, changes: dict[str, Any]) -> LogConfig:
        """Change topic config keys; each partition picks the new config up at once."""
        with self._lock:
            self._check_open()
            topic = self._topic(name)
            config = LogConfig.from_dict(changes, base=topic.config)
            topics = dict(self._topics)
            topics[name] = dataclasses.replace(topic, config=config)
            self._replace_table(topics, f"alter the config of topic {name!r}")
            for partition_log in topic.logs:
                partition_log.config = config
        return config

    def list_topics(self, *, include_internal: bool = True) -> list[str]:
        return sorted(n for n, t in self._topics.items() if include_internal or not t.internal)

    def has_topic(self, name: str) -> bool:
        return name in self._topics

    def topic(self, name: str) -> Topic:
        return self._topic(name)

    def describe_topic(self, name: str) -> TopicDescription:
        topic = self._topic(name)
        return TopicDescription(
            topic.name,
            topic.config,
            topic.internal,
            [
                PartitionDescription(
                    p, lg.log_start_offset, lg.log_end_offset, lg.size_bytes, len(lg.segments)
                )
                for p, lg in enumerate(topic.logs)
            ],
        )

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            validate_topic_name(name)  # an invalid name is INVALID_NAME, a valid unknown one NOT_FOUND
            raise UnknownTopicError(name)
        return topic

    def _check_open(self) -> None:
        if self.closed:
            raise LogClosedError(f"data directory {self.path} is closed")

    # -- partitions ---------------------------------------------------------------------------------

    def log(self, topic: str, partition: int) -> PartitionLog:
        entry = self._topic(topic)
        if not 0 <= partition < len(entry.logs):
            raise UnknownPartitionError(topic, partition, len(entry.logs))
        return entry.logs[partition]

    def logs(self) -> Iterator[PartitionLog]:
        for topic in list(self._topics.values()):
            yield from topic.logs

    def append(
        self,
        topic: str,
        partition: int,
        payload: bytes | bytearray | memoryview,
        *,
        headers: list[BatchHeader] | None = None,
        sync: bool | None = None,
    ) -> AppendResult:
        return self.log(topic, partition).append(payload, headers=headers, sync=sync)

    def read(
        self, topic: str, partition: int, offset: int, max_bytes: int = 1 << 20,
        *, max_offset: int | None = None,
    ) -> ReadResult:
        return self.log(topic, partition).read(offset, max_bytes, max_offset=max_offset)

    def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> int | None:
        return self.log(topic, partition).offset_for_timestamp(timestamp)

    # -- maintenance (the thread and its jobs: maintenance.py) ---------------------------------------

    def start(self) -> None:
        """Start the maintenance thread (``open(background=True)`` does)."""
        self.maintenance.start()

    def stop(self) -> None:
        """Stop the maintenance thread, waiting for its current pass."""
        self.maintenance.stop()

    def run_maintenance(self, *, scheduled: bool = False) -> dict[str, Any]:
        """One pass of every job; ``scheduled`` = only the jobs whose interval has passed."""
        return self.maintenance.run(scheduled=scheduled)

    def run_retention(self) -> list[RetentionResult]:
        return self.maintenance.run_retention()

    def run_compaction(self, *, force: bool = False) -> list[CompactionResult]:
        return self.maintenance.run_compaction(force=force)


def _parse_partition_dir(name: str) -> tuple[str, int] | None:
    topic, sep, number = name.rpartition("-")
    if not sep or not number.isdigit() or not NAME_PATTERN.fullmatch(topic) or topic in (".", ".."):
        return None
    return topic, int(number)


__all__ = [
    "DataDir",
    "Limits",
    "MaintenanceIntervals",
    "PartitionDescription",
    "Topic",
    "TopicDescription",
    "validate_topic_name",
]
