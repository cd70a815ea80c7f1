"""The nemesis: kills (SIGKILL) or pauses (SIGSTOP, later SIGCONT) the broker at random moments,
restarts it, and — with page-cache loss — damages the unsynced tail of segment files between a
kill and the restart, as a power loss would.

**What is unsynced.** The nemesis cannot ask the kernel which pages were still dirty, so it
takes the least that is certainly on disk and damages only what lies after it. Per partition of
a data topic, the *durable offset* is the largest of:

- the ``recovery_point`` in the partition's ``checkpoint.json`` (the broker fsynced up to it);
- one past the last acknowledged offset in the producers' histories, when ``flush=always``
  (``acks=all`` answers only after the fsync); the nemesis reads the histories a moment after
  the kill, so that answers already received are written down;
- the end of the last control batch (transaction markers are fsynced before the transaction is
  complete, whatever the topic's flush policy).

Everything from the first batch at or after the durable offset to the end of the partition's
last segment may be lost. The nemesis picks a random byte in that range and, from there on,
either cuts the file (``truncate``: the file size was not synced), overwrites pages with zeros
(``zero``: data pages never reached the disk), or writes random bytes (``garble``: a torn
write); later segments are cut to a random length. Sometimes it also removes the damaged
segment's offset index (indexes are rebuilt on an unclean start). Internal topics are left
alone: their durable points are not in the histories.

The damage is written to the history as a ``cut`` event with the first offset it removed — the
base offset of the first batch with a changed byte — which the checker uses to tell records a
power loss removed from records the broker lost.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logstore.records import iter_headers

PAGE_BYTES = 4096
#: The smallest garbled or zeroed range: it always covers bytes the batch crc covers.
MIN_DAMAGE_BYTES = 64


@dataclass
class Batch:
    segment: Path
    position: int  # in its segment
    base_offset: int
    next_offset: int
    end_position: int
    control: bool


def partition_dirs(data_dir: Path, topics: list[str]) -> dict[tuple[str, int], Path]:
    found = {}
    for topic in topics:
        for path in data_dir.glob(f"{topic}-*"):
            suffix = path.name[len(topic) + 1:]
            if path.is_dir() and suffix.isdigit():
                found[(topic, int(suffix))] = path
    return found


def segments(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.endswith(".log"))


def scan(directory: Path) -> list[Batch]:
    """Every whole batch of the partition's segments, in order (a torn tail is left out)."""
    batches = []
    for segment in segments(directory):
        data = segment.read_bytes()
        for header in iter_headers(data):
            batches.append(Batch(segment, header.position, header.base_offset,
                                 header.next_offset, header.end_position, header.is_control))
    return batches


def durable_offset(directory: Path, batches: list[Batch], acknowledged_end: int) -> int:
    try:
        checkpoint = json.loads((directory / "checkpoint.json").read_text())
        recovery_point = int(checkpoint.get("recovery_point", 0))
    except (FileNotFoundError, ValueError):
        recovery_point = 0
    control_end = max((b.next_offset for b in batches if b.control), default=0)
    return max(recovery_point, acknowledged_end, control_end)


def damage_partition(directory: Path, acknowledged_end: int,
                     rng: random.Random) -> dict[str, Any] | None:
    """Damage the unsynced tail of one partition; returns what was done, or None if nothing
    (or nothing that held a record) was changed."""
    batches = scan(directory)
    durable = durable_offset(directory, batches, acknowledged_end)
    files = segments(directory)
    if not files:
        return None
    first = next((b for b in batches if b.base_offset >= durable), None)
    if first is not None:
        start_segment, start_position = first.segment, first.position
    elif batches:  # only a torn tail (if anything) after the last whole batch
        start_segment, start_position = batches[-1].segment, batches[-1].end_position
    else:
        start_segment, start_position = files[0], 0
    later = [s for s in files if s.name > start_segment.name]
    size = start_segment.stat().st_size
    room = size - start_position + sum(s.stat().st_size for s in later)
    if room <= 0:
        return None
    position = start_position + rng.randrange(room)
    segment = start_segment
    for candidate in later:  # the chosen byte may lie in a later segment
        if position < size:
            break
        position -= size
        segment, size = candidate, candidate.stat().st_size
    action = rng.choice(("truncate", "zero", "garble"))
    changed_at = _apply(segment, position, action, rng)
    for after in (s for s in files if s.name > segment.name):
        length = after.stat().st_size
        cut_to = rng.randrange(length + 1) if length else 0
        os.truncate(after, cut_to)
        if changed_at is None and cut_to < length:
            segment, changed_at = after, cut_to
    removed_index = False
    if rng.random() < 0.3:
        index = segment.with_suffix(".index")
        if index.exists():
            index.unlink()
            removed_index = True
    if changed_at is None:
        return None
    # the first record removed: the batch holding the first changed byte, or the next one
    removed = [b for b in batches if (b.segment.name, b.end_position) > (segment.name, changed_at)]
    if not removed:
        return None
    return {"offset": removed[0].base_offset, "durable_offset": durable, "action": action,
            "segment": segment.name, "position": changed_at, "removed_index": removed_index}


def _apply(segment: Path, position: int, action: str, rng: random.Random) -> int | None:
    """Damage ``segment`` from ``position``; returns the first byte that changed (None: none)."""
    size = segment.stat().st_size
    if action == "truncate":
        os.truncate(segment, position)
        return position if position < size else None
    # whole pages from the chosen one on, or a random range of them
    length = size - position
    if rng.random() < 0.5:
        length = min(length, max(MIN_DAMAGE_BYTES, rng.randrange(1, 4 * PAGE_BYTES)))
    with open(segment, "r+b") as file:
        file.seek(position)
        before = file.read(length)
        after = bytes(length) if action == "zero" else rng.randbytes(length)
        file.seek(position)
        file.write(after)
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if old != new:
            return position + index
    return None


class AcknowledgedEnds:
    """Per partition, one past the highest acknowledged offset in the producers' histories,
    read incrementally (only whole lines, only what was added since the last call)."""

    def __init__(self, history_files: list[Path]) -> None:
        self._files = history_files
        self._read: dict[Path, int] = {}
        self.ends: dict[tuple[str, int], int] = {}

    def update(self) -> dict[tuple[str, int], int]:
        for path in self._files:
            try:
                with open(path, "rb") as file:
                    file.seek(self._read.get(path, 0))
                    data = file.read()
            except FileNotFoundError:
                continue
            whole = data[: data.rfind(b"\n") + 1]
            self._read[path] = self._read.get(path, 0) + len(whole)
            for line in whole.splitlines():
                if b'"offset"' not in line:
                    continue
                event = json.loads(line)
                if event.get("type") == "send" and event.get("offset") is not None:
                    key = (event["topic"], event["partition"])
                    self.ends[key] = max(self.ends.get(key, 0), event["offset"] + 1)
        return self.ends
