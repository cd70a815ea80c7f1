"""The replica comparison of the cluster torture run, on real partition directories: replicas
written with the same batches agree; a shorter log, or one batch with other bytes below the high
watermark, is a divergence naming the partition (and the first batch that differs)."""

from __future__ import annotations

from pathlib import Path

from bench.torture.convergence import divergences
from logstore.records import encode_batch
from logstore.storage import DataDir

BATCHES = {value: encode_batch([value, value]) for value in (b"a", b"b", b"c", b"X")}


def replica(path: Path, values: list[bytes]) -> Path:
    """A data directory with partition t-0 holding one batch (of two records) per value, the
    same bytes for the same value (as a follower copies the leader's batches)."""
    with DataDir.open(path, background=False) as store:
        store.create_topic("t", 1, {"flush": "never"})
        for value in values:
            store.append("t", 0, BATCHES[value])
    return path


def test_same_batches_agree_and_others_diverge(tmp_path: Path) -> None:
    values = [b"a", b"b", b"c"]
    dirs = {1: replica(tmp_path / "1", values), 2: replica(tmp_path / "2", values),
            3: replica(tmp_path / "3", [b"a", b"X", b"c"]), 4: replica(tmp_path / "4", values[:2])}
    assert divergences(dirs, "t", {0: (1, 2)}, {0: 6}) == []
    (changed,) = divergences(dirs, "t", {0: (1, 2, 3)}, {0: 6})
    assert changed["why"] == "bytes below the high watermark differ"
    assert changed["first_differing_batch"] == 2
    (short,) = divergences(dirs, "t", {0: (1, 4)}, {0: 4})
    assert short["log_end_offsets"] == {1: 6, 4: 4}
