"""Per-topic log configuration: the keys, their defaults, and parsing from strings.

Every key is documented in the README ("Topic configuration"). Values arrive as strings from the
CLI and the API (``--config segment_bytes=1048576``) or as Python values in the embedded API;
``LogConfig.from_dict`` parses and checks both and raises ``InvalidConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from logstore.errors import InvalidConfigError

FLUSH_NEVER = "never"
FLUSH_INTERVAL = "interval"
FLUSH_ALWAYS = "always"
FLUSH_POLICIES = (FLUSH_NEVER, FLUSH_INTERVAL, FLUSH_ALWAYS)

CLEANUP_POLICIES = ("delete", "compact", "compact,delete")

#: Positions in the offset index are <u4, so a segment must stay below 4 GiB; keep a margin.
MAX_SEGMENT_BYTES = (1 << 31) - 1
MIN_INDEX_BYTES = 64

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LogConfig:
    #: Roll the active segment when it would grow past this many bytes.
    segment_bytes: int = 1 << 30
    #: Roll the active segment when an append's newest record timestamp is more than this past
    #: the segment's first batch timestamp (milliseconds of record time, as Kafka does).
    segment_ms: int = 7 * DAY_MS
    #: Bytes preallocated for each segment's offset index (and time index); full index = roll.
    segment_index_bytes: int = 10 << 20
    #: One offset-index entry per this many bytes of batches.
    index_interval_bytes: int = 4096
    #: never = page cache only; interval = fsync every flush_interval_ms; always = fsync before
    #: an append returns (concurrent appends share one fdatasync).
    flush: str = FLUSH_INTERVAL
    flush_interval_ms: int = 1000
    #: Delete sealed segments whose newest record is older than this; -1 = keep forever.
    retention_ms: int = 7 * DAY_MS
    #: Delete the oldest sealed segments while the partition is larger than this; -1 = no limit.
    retention_bytes: int = -1
    #: delete, compact, or compact,delete.
    cleanup_policy: str = "delete"
    #: Compaction keeps tombstones (null values) for this long after their timestamp.
    delete_retention_ms: int = DAY_MS
    #: Largest batch a producer may append.
    max_batch_bytes: int = 16 << 20

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @classmethod
    def keys(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, base: LogConfig | None = None) -> LogConfig:
        """Parse ``values`` (strings or Python values) over ``base`` (or the defaults)."""
        result = base or cls()
        if not values:
            return result
        fields = {field.name: field for field in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            normalized = key.replace(".", "_").replace("-", "_")
            if normalized not in fields:
                raise InvalidConfigError(
                    f"unknown topic config key {key!r}; known keys: {', '.join(cls.keys())}",
                    key=key,
                    value=raw,
                )
            kind = fields[normalized].type
            if kind in ("int", int):
                changes[normalized] = _parse_int(key, raw)
            else:
                changes[normalized] = str(raw).strip().lower().replace(" ", "")
        config = dataclasses.replace(result, **changes)
        config.check()
        return config

    def check(self) -> None:
        def bad(key: str, message: str) -> InvalidConfigError:
            return InvalidConfigError(f"{key}={getattr(self, key)!r}: {message}", key=key,
                                      value=getattr(self, key))

        if not 4096 <= self.segment_bytes <= MAX_SEGMENT_BYTES:
            raise bad("segment_bytes", f"must be between 4096 and {MAX_SEGMENT_BYTES}")
        if self.segment_ms < 1:
            raise bad("segment_ms", "must be positive")
        if not MIN_INDEX_BYTES <= self.segment_index_bytes <= (1 << 30):
            raise bad("segment_index_bytes", f"must be between {MIN_INDEX_BYTES} and 1 GiB")
        if self.index_interval_bytes < 0:
            raise bad("index_interval_bytes", "must not be negative")
        if self.flush not in FLUSH_POLICIES:
            raise bad("flush", f"must be one of {', '.join(FLUSH_POLICIES)}")
        if self.flush_interval_ms < 1:
            raise bad("flush_interval_ms", "must be positive")
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise bad("retention_ms", "must be positive or -1 (forever)")
        if self.retention_bytes < -1:
            raise bad("retention_bytes", "must be non-negative or -1 (no limit)")
        if self.cleanup_policy not in CLEANUP_POLICIES:
            raise bad("cleanup_policy", f"must be one of {', '.join(CLEANUP_POLICIES)}")
        if self.delete_retention_ms < 0:
            raise bad("delete_retention_ms", "must not be negative")
        if not 1024 <= self.max_batch_bytes <= MAX_SEGMENT_BYTES:
            raise bad("max_batch_bytes", f"must be between 1024 and {MAX_SEGMENT_BYTES}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def overrides(self, base: LogConfig | None = None) -> dict[str, Any]:
        """The keys that differ from ``base`` (default: the built-in defaults)."""
        default = base or LogConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(default, k) != v}


def _parse_int(key: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise InvalidConfigError(f"{key} must be an integer, not {raw!r}", key=key, value=raw)
    if isinstance(raw, int):
        return raw
    text = str(raw).strip().lower().replace("_", "")
    multiplier = 1
    for suffix, factor in (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30)):
        if text.endswith(suffix):
            text, multiplier = text[: -len(suffix)], factor
            break
    try:
        return int(text) * multiplier
    except ValueError:
        raise InvalidConfigError(f"{key} must be an integer, not {raw!r}", key=key, value=raw) from None
