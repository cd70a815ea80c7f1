"""``frames.columns``: record bytes -> Arrow batches, checked on encoded bytes (no broker)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from logstore.client.frames import columns
from logstore.client.frames.read import widen
from logstore.records import decode_records, encode_batch


def address_range(data: bytes) -> tuple[int, int]:
    start = np.frombuffer(data, dtype=np.uint8).ctypes.data
    return start, start + len(data)


def batches_of(data: bytes, first: int = 0, stop: int = 1 << 40) -> list[pa.RecordBatch]:
    return columns.to_batches(columns.decode(memoryview(data), first, stop, []), 3)


def test_value_and_key_buffers_are_views_of_the_received_bytes() -> None:
    data = encode_batch([b"value-%d" % i for i in range(1000)],
                        keys=[b"key-%d" % i if i % 2 else None for i in range(1000)])
    low, high = address_range(data)
    (batch,) = batches_of(data)
    for name in ("value", "key"):
        buffer = batch.column(name).buffers()[2]
        assert low <= buffer.address and buffer.address + buffer.size <= high
    assert batch.column("value").to_pylist() == [b"value-%d" % i for i in range(1000)]
    assert batch.column("key").to_pylist() == [b"key-%d" % i if i % 2 else None
                                               for i in range(1000)]


def test_every_large_batch_of_a_message_is_its_own_zero_copy_chunk() -> None:
    data = b"".join(encode_batch([b"b%d-%d" % (b, i) for i in range(500)], base_offset=b * 500)
                    for b in range(3))
    low, high = address_range(data)
    batches = batches_of(data)
    assert [batch.num_rows for batch in batches] == [500, 500, 500]
    for batch in batches:
        buffer = batch.column("value").buffers()[2]
        assert low <= buffer.address < high
        assert batch.column("partition").to_pylist() == [3] * 500


def test_short_batches_are_gathered_into_one_chunk() -> None:
    data = b"".join(encode_batch([b"x%d" % b, None, b"y%d" % b], base_offset=b * 3)
                    for b in range(100))
    (batch,) = batches_of(data)
    expected = [value for b in range(100) for value in (b"x%d" % b, None, b"y%d" % b)]
    assert batch.column("value").to_pylist() == expected
    assert batch.column("offset").to_pylist() == list(range(300))


def test_a_range_trims_the_records_before_and_after_it() -> None:
    data = encode_batch([b"%d" % i for i in range(100)], timestamps=np.arange(100) + 5000)
    (batch,) = batches_of(data, 10, 20)
    assert batch.column("offset").to_pylist() == list(range(10, 20))
    assert batch.column("timestamp").cast("int64").to_pylist() == list(range(5010, 5020))


def test_nulls_and_headers_match_the_record_decoder() -> None:
    headers = [[("a", b"1"), ("b", None), ("a", b"")] if i % 3 == 0 else
               ([("only", b"x" * i)] if i % 3 == 1 else None) for i in range(200)]
    values = [None if i % 5 == 0 else b"v" * (i % 9) for i in range(200)]
    data = encode_batch(values, keys=[None] * 200, headers=headers)
    (batch,) = batches_of(data)
    records = decode_records(data)
    assert batch.column("value").to_pylist() == [r.value for r in records]
    assert batch.column("key").null_count == 200
    assert [tuple(h) for h in batch.column("headers").to_pylist()] == [r.headers for r in records]


def test_a_header_running_past_its_record_is_corrupt() -> None:
    from logstore.client.frames.headers import to_map
    from logstore.errors import CorruptBatchError

    data = b"\x05\x00ab"  # key length 5, two bytes of key
    with pytest.raises(CorruptBatchError, match="runs past"):
        to_map(pa, data, np.array([0]), np.array([len(data)], dtype=np.int32))


def test_widen_makes_large_binary_and_keeps_the_data_buffers() -> None:
    data = encode_batch([b"abc"] * 10)
    table = pa.Table.from_batches(batches_of(data))
    before = table.column("value").chunk(0).buffers()[2].address
    wide = widen(table, threshold_bytes=30)
    assert wide.schema.field("value").type == pa.large_binary()
    assert wide.column("value").chunk(0).buffers()[2].address == before
    assert wide.column("value").to_pylist() == [b"abc"] * 10
    assert widen(table, threshold_bytes=31).schema.field("value").type == pa.binary()


def test_batches_of_one_message_share_one_offsets_buffer_and_keep_nulls_per_batch() -> None:
    values = [[None if (b + i) % 7 == 0 else b"%d-%d" % (b, i) * (i % 4) for i in range(300)]
              for b in range(3)]
    keys = [[b"k%d" % i if i % 3 else None for i in range(300)] for _ in range(3)]
    data = b"".join(encode_batch(values[b], keys=keys[b], base_offset=b * 300) for b in range(3))
    batches = batches_of(data)
    assert [batch.num_rows for batch in batches] == [300, 300, 300]
    records = decode_records(data)
    table = pa.Table.from_batches(batches)
    assert table.column("value").to_pylist() == [r.value for r in records]
    assert table.column("key").to_pylist() == [r.key for r in records]
    assert table.column("offset").to_pylist() == list(range(900))
    addresses = {batch.column("value").buffers()[1].address for batch in batches}
    assert len(addresses) == 3  # three slices ...
    first = batches[0].column("value").buffers()[1]
    assert all(first.address <= a < first.address + 4 * 903 for a in addresses)  # ... of one


def test_building_batches_does_not_import_pandas() -> None:
    import subprocess
    import sys

    script = ("import sys\n"
              "from logstore.client.frames import columns\n"
              "from logstore.records import encode_batch\n"
              "data = encode_batch([b'v'] * 10, headers=[[('h', b'1')]] * 10)\n"
              "columns.to_batches(columns.decode(memoryview(data), 0, 99, []), 0)\n"
              "columns.to_batches(columns.decode(memoryview(encode_batch([b'v'])), 0, 99, []), 0)\n"
              "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "False"  # pa.array() would import it (a second on the first read)
