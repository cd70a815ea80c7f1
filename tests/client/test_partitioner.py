"""Key partitioning (Kafka's murmur2, bit for bit) and sticky partitions for keyless records."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from logstore.client.partitioner import (
    Partitioner,
    murmur2,
    murmur2_array,
    partition_for_key,
    partitions_for_keys,
    to_positive,
)

#: Kafka's own vectors: UtilsTest.testMurmur2 (clients/src/test/java/.../utils/UtilsTest.java).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


def test_murmur2_matches_kafka_test_vectors() -> None:
    for key, expected in KAFKA_MURMUR2.items():
        assert murmur2(key) == expected, key


def test_to_positive_clears_the_sign_bit_like_kafka() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(1 << 31)) == 0  # not abs(), which would overflow in Java
    assert to_positive(5) == 5


def test_partition_for_key_is_to_positive_murmur2_mod_partitions() -> None:
    # -790332482 & 0x7fffffff = 1357151166; 1357151166 % 3 = 0, % 7 = 5
    assert partition_for_key(b"foobar", 3) == 1357151166 % 3
    assert partition_for_key(b"foobar", 7) == 1357151166 % 7


def test_murmur2_accepts_bytearray_and_memoryview() -> None:
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"xfoobar")[1:]) == -790332482


@given(st.lists(st.binary(max_size=40), max_size=50))
def test_murmur2_array_equals_murmur2_per_key(keys: list[bytes]) -> None:
    lengths = np.array([len(key) for key in keys], dtype=np.int64)
    hashes = murmur2_array(lengths, b"".join(keys))
    assert hashes.tolist() == [murmur2(key) & 0xFFFFFFFF for key in keys]


def test_partitions_for_keys_equals_partition_for_key() -> None:
    keys = list(KAFKA_MURMUR2) + [b"", b"k", b"\xff\xfe\xfd\xfc\xfb"]
    lengths = np.array([len(key) for key in keys])
    assert partitions_for_keys(lengths, b"".join(keys), 5).tolist() == [
        partition_for_key(key, 5) for key in keys
    ]


def test_for_key_is_cached_and_stable() -> None:
    partitioner = Partitioner(seed=1)
    first = [partitioner.for_key(key, 6) for key in KAFKA_MURMUR2]
    again = [partitioner.for_key(key, 6) for key in KAFKA_MURMUR2]
    assert first == again == [partition_for_key(key, 6) for key in KAFKA_MURMUR2]


def test_next_sticky_moves_to_another_partition() -> None:
    partitioner = Partitioner(seed=7)
    for current in range(4):
        chosen = {partitioner.next_sticky(4, current) for _ in range(200)}
        assert chosen == set(range(4)) - {current}


def test_next_sticky_with_one_partition_stays() -> None:
    assert Partitioner(seed=1).next_sticky(1, 0) == 0


def test_first_sticky_is_a_valid_partition() -> None:
    partitioner = Partitioner(seed=3)
    assert {partitioner.first_sticky(3) for _ in range(100)} == {0, 1, 2}
