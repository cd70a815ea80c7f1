"""A share group's configuration: how long a lock lasts, how often a record may be delivered,
how long a released record waits, where archived records go, how many may be acquired at once.

Stored as one key of ``__share_group_state`` (``["share-config", group]``); every key may be set
as a string (the CLI's ``key=value``) or as its type. Unknown keys and bad values raise
``InvalidConfigError`` naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from logstore.errors import InvalidConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, None: 1}

#: Longest lock or backoff step accepted (one day).
MAX_DURATION_MS = 24 * 3600 * 1000


def parse_duration_ms(text: str, key: str) -> int:
    """``"250ms"``, ``"5s"``, ``"2m"`` or a bare number of milliseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidConfigError(f"{key}: {text!r} is not a duration like 500ms, 5s or 2m", key=key, value=text)
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_backoff(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A backoff list: ``"1s,5s,30s"`` or a list of milliseconds; empty means no delay."""
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        steps = tuple(parse_duration_ms(p, "backoff") for p in parts)
    else:
        steps = tuple(int(v) for v in value)
    for step in steps:
        if not 0 <= step <= MAX_DURATION_MS:
            raise InvalidConfigError(f"backoff steps must be within 0..{MAX_DURATION_MS} ms, not {step}",
                                     key="backoff", value=value)
    return steps


@dataclass(frozen=True)
class ShareGroupConfig:
    #: How long an acquired record stays locked to its member (renew extends it).
    lock_ms: int = 30_000
    #: Deliveries after which a record is archived (and dead-lettered) instead of made available.
    max_deliveries: int = 5
    #: Delay before a released record is available again, by delivery count (the n-th delivery
    #: uses step n-1; the last step repeats). An explicit delay in the release wins.
    backoff_ms: tuple[int, ...] = field(default_factory=tuple)
    #: Topic archived records are written to ("" = none); created when first needed.
    dead_letter_topic: str = ""
    #: Records of one share-partition that may be acquired (by all members) at once.
    max_acquired_records: int = 2000
    #: Where a share-partition the group has never read starts: "earliest" or "latest".
    auto_offset_reset: str = "earliest"

    def __post_init__(self) -> None:
        if not 1 <= self.lock_ms <= MAX_DURATION_MS:
            raise InvalidConfigError(f"lock_ms must be within 1..{MAX_DURATION_MS}, not {self.lock_ms}",
                                     key="lock_ms", value=self.lock_ms)
        if not 1 <= self.max_deliveries <= 1000:
            raise InvalidConfigError(f"max_deliveries must be within 1..1000, not {self.max_deliveries}",
                                     key="max_deliveries", value=self.max_deliveries)
        if not 1 <= self.max_acquired_records <= 1_000_000:
            raise InvalidConfigError(
                f"max_acquired_records must be within 1..1000000, not {self.max_acquired_records}",
                key="max_acquired_records", value=self.max_acquired_records)
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise InvalidConfigError(
                f"auto_offset_reset must be earliest or latest, not {self.auto_offset_reset!r}",
                key="auto_offset_reset", value=self.auto_offset_reset)

    @classmethod
    def keys(cls) -> list[str]:
        return ["lock_ms", "max_deliveries", "backoff_ms", "dead_letter_topic", "max_acquired_records",
                "auto_offset_reset"]

    def with_changes(self, changes: Mapping[str, Any]) -> ShareGroupConfig:
        """A copy with ``changes`` applied (string values parsed); unknown keys refused."""
        parsed: dict[str, Any] = {}
        for raw_key, value in changes.items():
            key = raw_key.replace("-", "_").replace(".", "_")
            if key == "backoff":
                key = "backoff_ms"
            if key not in self.keys():
                raise InvalidConfigError(
                    f"unknown share group config key {raw_key!r} (known: {', '.join(self.keys())})",
                    key=raw_key, value=value)
            if key == "backoff_ms":
                parsed[key] = parse_backoff(value)
            elif key in ("dead_letter_topic", "auto_offset_reset"):
                parsed[key] = str(value)
            elif key == "lock_ms" and isinstance(value, str):
                parsed[key] = parse_duration_ms(value, key)
            else:
                try:
                    parsed[key] = int(value)
                except (TypeError, ValueError):
                    raise InvalidConfigError(f"{key}: {value!r} is not an integer", key=key, value=value) from None
        return replace(self, **parsed)

    def backoff_for(self, delivery_count: int) -> int:
        """Delay (ms) of a release without an explicit delay after ``delivery_count`` deliveries."""
        if not self.backoff_ms:
            return 0
        return self.backoff_ms[min(max(delivery_count, 1), len(self.backoff_ms)) - 1]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShareGroupConfig:
        """The stored form back (keys a newer broker wrote and this one does not know: ignored)."""
        return cls().with_changes({k: v for k, v in data.items() if k in cls.keys()})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backoff_ms"] = list(self.backoff_ms)
        return data

    def describe(self) -> dict[str, str]:
        """Every key as a string (the API's config map)."""
        data = self.to_dict()
        data["backoff_ms"] = ",".join(f"{v}ms" for v in self.backoff_ms)
        return {k: str(v) for k, v in data.items()}
