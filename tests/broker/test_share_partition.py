"""A share-partition over a partition log (``share/partition.py``): acquiring below a given end."""

from __future__ import annotations

from pathlib import Path

from logstore.broker.share import AckKind, AckRange, ShareGroupConfig
from logstore.broker.share.partition import Change, SharePartition
from logstore.broker.share.window import ACKNOWLEDGED, AVAILABLE, InFlightWindow
from logstore.records import decode_columns, encode_batch
from logstore.storage import DataDir


def test_records_of_the_window_past_the_given_end_wait_and_are_not_marked_done(tmp_path: Path) -> None:
    """A cluster's state leader whose copy of the partition is behind the window another broker
    built: the records it does not hold yet stay available (a single node's log end past them
    would mean a recovery cut them, and marks them done)."""
    data_dir = DataDir.open(tmp_path)
    try:
        data_dir.create_topic("t", 1)
        partition_log = data_dir.log("t", 0)
        partition_log.append(encode_batch([b"r%d" % i for i in range(10)]), sync=False)
        sp, config = SharePartition("g", "t", 0, InFlightWindow(0)), ShareGroupConfig()

        def acquire(end_offset: int | None) -> list[int]:
            out = sp.acquire(partition_log, 0, 1000, 30_000, config, 100, 1 << 20, Change(), end_offset)
            return [o for f, last in zip(out.first_offsets, out.last_offsets, strict=True) for o in range(f, last + 1)]

        assert acquire(None) == list(range(10))
        sp.apply(AckRange("t", 0, 0, 9, AckKind.RELEASE, delay_ms=0), 1000, 30_000, config, Change())
        assert acquire(5) == [0, 1, 2, 3, 4]
        assert (sp.window.state[5:10] == AVAILABLE).all() and not (sp.window.state == ACKNOWLEDGED).any()
        assert acquire(None) == [5, 6, 7, 8, 9]
        assert sp.window.count[5:10].tolist() == [2] * 5
    finally:
        data_dir.close()


def test_adjacent_new_batches_go_as_one_piece_and_a_marker_between_splits_them(tmp_path: Path) -> None:
    data_dir = DataDir.open(tmp_path)
    try:
        data_dir.create_topic("t", 1)
        partition_log = data_dir.log("t", 0)
        for batch in ([b"a", b"b"], [b"c", b"d"]):
            partition_log.append(encode_batch(batch), sync=False)
        partition_log.append(encode_batch([b""], control=True), sync=False)  # a transaction marker
        partition_log.append(encode_batch([b"e"]), sync=False)
        sp = SharePartition("g", "t", 0, InFlightWindow(0))
        out = sp.acquire(partition_log, 0, 1000, 30_000, ShareGroupConfig(), 100, 1 << 20, Change())
        assert len(out.records) == 2  # offsets 0-3 in one piece, 5 in another
        assert decode_columns(bytes(out.records[0])).values_bytes() == [b"a", b"b", b"c", b"d"]
        assert decode_columns(bytes(out.records[1])).values_bytes() == [b"e"]
        assert (out.first_offsets.tolist(), out.last_offsets.tolist()) == ([0, 5], [3, 5])
        assert sp.window.state[4] == ACKNOWLEDGED  # the marker's offset: done as met
    finally:
        data_dir.close()
