"""After the cluster torture run: do every partition's replicas hold the same log?

Read from the brokers' data directories once every broker has stopped. Per partition, every
replica must end at the same offset, at least the high watermark the leader last reported, and
hold the same bytes (every batch, header included: a follower copies the leader's batches as
they are) below that high watermark. Anything else is a *replica divergence*.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bench.torture.nemesis import scan


def replica_log(directory: Path, high_watermark: int) -> tuple[int, str, list[tuple[int, str]]]:
    """(log end offset, digest of the batches below ``high_watermark``, and each of those
    batches' base offset and digest) of one replica's partition directory."""
    if not directory.is_dir():
        return 0, hashlib.sha256().hexdigest(), []
    batches = scan(directory)
    total = hashlib.sha256()
    each: list[tuple[int, str]] = []
    contents: dict[Path, bytes] = {}
    for batch in batches:
        if batch.next_offset > high_watermark:
            break
        data = contents.get(batch.segment)
        if data is None:
            data = contents[batch.segment] = batch.segment.read_bytes()
        raw = data[batch.position:batch.end_position]
        total.update(raw)
        each.append((batch.base_offset, hashlib.sha256(raw).hexdigest()))
    end = batches[-1].next_offset if batches else 0
    return end, total.hexdigest(), each


def divergences(data_dirs: dict[int, Path], topic: str, replicas: dict[int, tuple[int, ...]],
                high_watermarks: dict[int, int]) -> list[dict[str, Any]]:
    """One entry per partition whose replicas differ (``data_dirs``: broker id -> data dir;
    ``replicas``: partition -> its replicas' broker ids)."""
    found = []
    for partition, brokers in sorted(replicas.items()):
        hw = high_watermarks[partition]
        logs = {b: replica_log(data_dirs[b] / f"{topic}-{partition}", hw) for b in brokers}
        ends = {b: log[0] for b, log in logs.items()}
        if len(set(ends.values())) > 1 or min(ends.values()) < hw:
            found.append({"topic": topic, "partition": partition, "why": "log ends differ",
                          "log_end_offsets": ends, "high_watermark": hw})
            continue
        if len({log[1] for log in logs.values()}) > 1:
            first = _first_difference({b: log[2] for b, log in logs.items()})
            found.append({"topic": topic, "partition": partition,
                          "why": "bytes below the high watermark differ",
                          "first_differing_batch": first, "high_watermark": hw})
    return found


def _first_difference(batches: dict[int, list[tuple[int, str]]]) -> int | None:
    """The base offset of the first batch at which the replicas disagree."""
    longest = max(len(b) for b in batches.values())
    for index in range(longest):
        seen = {b[index] if index < len(b) else None for b in batches.values()}
        if len(seen) > 1:
            return min(s[0] for s in seen if s is not None)
    return None
