"""send_batch's input forms and how they are cut into batches, without a broker."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from logstore.client import bulk
from logstore.client.partitioner import partition_for_key
from logstore.records import RECORD_OVERHEAD, decode_records, iter_headers, validate_batches


def plan(values: object, *, keys: object = None, partition: int | None = 0, partitions: int = 1,
         batch_bytes: int = 1 << 20, timestamps: object = 1000,
         sticky: object = None) -> list[bulk.Slice]:
    value_column = bulk.to_column(values)
    count = len(value_column[0])
    counter = itertools.count()
    return list(bulk.plan(
        values=value_column,
        keys=None if keys is None else bulk.to_column(keys, "keys"),
        headers=None,
        timestamps=bulk.timestamps_of(timestamps, count),
        partition=partition,
        partitions=partitions,
        batch_bytes=batch_bytes,
        sticky=sticky or (lambda n: [next(counter) % partitions for _ in range(n)]),
    ))


def decoded(pieces: list[bulk.Slice]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for piece in pieces:
        out += [record.value for record in decode_records(bulk.encode_slice(piece, "none"))]
    return out


def test_a_list_of_bytes_with_nulls_becomes_a_column() -> None:
    lengths, data = bulk.to_column([b"ab", None, b"", b"c"])
    assert lengths.tolist() == [2, -1, 0, 1]
    assert data.tobytes() == b"abc"


def test_lengths_and_a_blob_are_used_as_they_are() -> None:
    lengths, data = bulk.to_column((np.array([1, 2]), b"abc"))
    assert lengths.tolist() == [1, 2] and data.tobytes() == b"abc"


def test_lengths_must_add_up_to_the_blob() -> None:
    with pytest.raises(ValueError, match="add up"):
        bulk.to_column((np.array([1, 5]), b"abc"))


def test_a_2d_array_is_fixed_size_records() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    lengths, data = bulk.to_column(array)
    assert lengths.tolist() == [4, 4, 4]
    assert data.tobytes() == array.tobytes()


def test_other_inputs_are_refused() -> None:
    with pytest.raises(TypeError):
        bulk.to_column(b"not a list")
    with pytest.raises(ValueError):
        bulk.to_column(np.zeros(3, dtype=np.uint8))


def test_records_are_cut_into_batches_of_about_batch_bytes() -> None:
    record = 100 + RECORD_OVERHEAD
    values = [bytes([i % 256]) * 100 for i in range(1000)]
    pieces = plan(values, batch_bytes=100 * record)
    assert [len(piece) for piece in pieces] == [100] * 10
    assert decoded(pieces) == values


def test_a_small_call_is_one_batch() -> None:
    pieces = plan([b"a", b"b"])
    assert len(pieces) == 1 and decoded(pieces) == [b"a", b"b"]


def test_a_record_larger_than_batch_bytes_gets_its_own_batch() -> None:
    values = [b"s", b"L" * 5000, b"s"]
    pieces = plan(values, batch_bytes=1000)
    assert [len(p) for p in pieces] == [2, 1]
    assert decoded(pieces) == values


def test_keyless_batches_take_sticky_partitions_one_batch_each() -> None:
    chosen = iter([3, 1, 2])
    pieces = plan([b"x" * 100] * 30, partition=None, partitions=4,
                  batch_bytes=10 * (100 + RECORD_OVERHEAD),
                  sticky=lambda n: [next(chosen) for _ in range(n)])
    assert [piece.partition for piece in pieces] == [3, 1, 2]


def test_keyed_records_are_grouped_by_murmur2_partition_in_order() -> None:
    keys = [b"k%d" % (i % 7) for i in range(200)]
    values = [b"v%d" % i for i in range(200)]
    pieces = plan(values, keys=keys, partition=None, partitions=3)
    by_partition: dict[int, list[bytes | None]] = {}
    for piece in pieces:
        records = decode_records(bulk.encode_slice(piece, "none"))
        for record in records:
            assert partition_for_key(record.key or b"", 3) == piece.partition
        by_partition.setdefault(piece.partition, []).extend(r.value for r in records)
    for partition, got in by_partition.items():
        assert got == [v for k, v in zip(keys, values, strict=True)
                       if partition_for_key(k, 3) == partition]


def test_per_record_timestamps_follow_their_records() -> None:
    pieces = plan([b"a", b"b", b"c"], timestamps=[10, 30, 20])
    assert [r.timestamp for r in decode_records(bulk.encode_slice(pieces[0], "none"))] == [10, 30, 20]


def test_timestamps_weeks_apart_become_several_batches_back_to_back() -> None:
    far = 40 * 24 * 3600 * 1000
    piece = plan([b"a", b"b", b"c"], timestamps=[0, far, far + 1])[0]
    encoded = bulk.encode_slice(piece, "none")
    assert len(validate_batches(encoded)) == 2
    assert [h.record_count for h in iter_headers(encoded)] == [1, 2]
    assert [r.timestamp for r in decode_records(encoded)] == [0, far, far + 1]


def test_timestamps_must_match_the_record_count() -> None:
    with pytest.raises(ValueError):
        bulk.timestamps_of([1, 2], 3)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_slices_decode(codec: str) -> None:
    values = [b"value-%d" % i for i in range(500)]
    piece = plan(values)[0]
    assert [r.value for r in decode_records(bulk.encode_slice(piece, codec))] == values
