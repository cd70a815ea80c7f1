"""``frames.log_batches``: one log batch -> one Arrow batch straight from its bytes, checked
against ``columns.to_batches`` (the decode_columns path) on encoded bytes (no broker)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from logstore.client.frames import columns, log_batches
from logstore.errors import CorruptBatchError
from logstore.records import encode_batch
from logstore.records.encode import encode_columns


def _random_batch(rng: np.random.Generator, base_offset: int, count: int) -> bytes:
    """A batch with a random choice of: nulls, keys, headers, sparse offsets, timestamps,
    compression."""
    values = [None if rng.random() < 0.1 else bytes(rng.integers(0, 256, rng.integers(0, 40),
                                                                dtype=np.uint8))
              for _ in range(count)]
    keys = ([b"k%d" % i if rng.random() < 0.7 else None for i in range(count)]
            if rng.random() < 0.5 else None)
    headers = ([[("h", b"%d" % i)] if i % 3 == 0 else None for i in range(count)]
               if rng.random() < 0.3 else None)
    stamps = (1_700_000_000_000 + np.sort(rng.integers(0, 10_000, count))
              if rng.random() < 0.5 else 1_700_000_000_123)
    codec = str(rng.choice(["none", "none", "lz4", "zstd"]))
    if rng.random() < 0.3:  # a compacted batch: offsets with gaps, no keys or headers
        deltas = np.sort(rng.choice(count * 3, count, replace=False)).astype(np.int32)
        deltas -= deltas[0]
        lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int32)
        return encode_columns(value_lengths=lengths, values=b"".join(v for v in values if v),
                              timestamps=stamps, offset_deltas=deltas, codec=codec,
                              base_offset=base_offset)
    return encode_batch(values, keys=keys, timestamps=stamps, headers=headers, codec=codec,
                        base_offset=base_offset)


def _table(batches: list[pa.RecordBatch], names: tuple[str, ...]) -> pa.Table:
    return pa.Table.from_batches(batches, schema=columns.schema(names))


@pytest.mark.parametrize("seed", range(6))
def test_every_column_equals_the_decode_path_over_random_batches_and_ranges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts, base = [], 100
    for _ in range(4):
        batch = _random_batch(rng, base, int(rng.integers(300, 700)))
        parts.append(batch)
        base += 3000
    data = memoryview(b"".join(parts))
    for _ in range(5):
        first, stop = sorted(int(x) for x in rng.integers(0, base + 100, 2))
        for names in (columns.COLUMNS, ("value", "offset")):
            direct = log_batches.message_batches(data, first, stop, [], 2, names)
            decoded = columns.to_batches(columns.decode(data, first, stop, []), 2, names)
            assert _table(direct, names).equals(_table(decoded, names))


def test_the_values_buffer_is_a_view_and_one_batch_is_one_chunk() -> None:
    data = b"".join(encode_batch([b"v%d" % i for i in range(400)], base_offset=b * 400)
                    for b in range(3))
    start = np.frombuffer(data, dtype=np.uint8).ctypes.data
    batches = log_batches.message_batches(memoryview(data), 0, 1 << 40, [], 0)
    assert [batch.num_rows for batch in batches] == [400, 400, 400]
    for batch in batches:
        buffer = batch.column("value").buffers()[2]
        assert start <= buffer.address and buffer.address + buffer.size <= start + len(data)


def test_control_batches_and_aborted_transactions_are_left_out() -> None:
    data = b"".join([
        encode_batch([b"a"] * 300, base_offset=0),
        encode_batch([b"x"] * 300, base_offset=300, producer_id=7, producer_epoch=0,
                     base_sequence=0, transactional=True),
        encode_batch([b"\x00\x00\x00\x00"], base_offset=600, producer_id=7, producer_epoch=0,
                     transactional=True, control=True),
        encode_batch([b"b"] * 300, base_offset=601),
    ])
    batches = log_batches.message_batches(memoryview(data), 0, 1 << 40, [(7, 300, 600)], 0)
    values = _table(batches, columns.COLUMNS).column("value").to_pylist()
    assert values == [b"a"] * 300 + [b"b"] * 300


def test_lengths_past_the_batch_are_corrupt() -> None:
    data = bytearray(encode_columns(value_lengths=np.array([5, 1000], dtype=np.int32),
                                    values=b"x" * 1005))
    del data[-900:]  # the batch now says 1005 value bytes and holds 105
    data[8:12] = len(data).to_bytes(4, "little")
    from logstore.records.batch import read_header

    with pytest.raises(CorruptBatchError, match="record lengths"):
        log_batches.to_record_batch(memoryview(bytes(data)), read_header(bytes(data)), 0, 0,
                                    10)


def test_a_message_is_one_table_with_a_value_chunk_per_log_batch_trimmed_at_both_ends() -> None:
    data = b"".join(encode_batch([b"v%d" % (b * 400 + i) for i in range(400)],
                                 base_offset=b * 400) for b in range(3))
    table = log_batches.message_table(memoryview(data), 100, 1100, [], 5)
    assert table.column("offset").to_pylist() == list(range(100, 1100))
    assert table.column("value").to_pylist() == [b"v%d" % i for i in range(100, 1100)]
    assert table.column("value").num_chunks == 3 and table.column("offset").num_chunks == 1
    assert [batch.num_rows for batch in table.to_batches()] == [300, 400, 300]
    assert log_batches.message_table(memoryview(data), 1200, 1300, [], 5) is None
