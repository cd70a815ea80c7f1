"""Choosing a partition: Kafka's murmur2 for keyed records, sticky partitions for keyless ones.

Keyed records go to ``toPositive(murmur2(key)) % partitions`` exactly as Kafka's Java client
computes it (``Utils.murmur2`` and ``Utils.toPositive``), so a key lands on the same partition
number as it would in Kafka. ``murmur2`` hashes one key in Python; ``murmur2_array`` hashes many
keys at once with numpy (one pass per 4-byte word of the longest key, no per-key Python loop) and
is what ``Producer.send_batch`` uses.

Keyless records stick to one partition per topic until its batch is closed (full or lingered),
then move to another partition chosen at random, so keyless traffic forms few large batches
(Kafka's sticky partitioner, KIP-480).

Thread-safety: ``first_sticky``/``next_sticky`` are called under the accumulator's lock;
``for_key`` may be called from any thread (its cache holds pure results, and dict operations are
atomic).
"""

from __future__ import annotations

import random

import numpy as np

SEED = 0x9747B28C
M = 0x5BD1E995
R = 24
MASK32 = 0xFFFFFFFF

#: Hashes of recently seen keys: keyed traffic usually repeats a bounded set of keys.
KEY_CACHE_SIZE = 1 << 16


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's ``Utils.murmur2``: the 32-bit hash as a signed int, like Java's ``int``."""
    data = bytes(data)
    length = len(data)
    h = (SEED ^ length) & MASK32
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * M) & MASK32
        k ^= k >> R
        k = (k * M) & MASK32
        h = ((h * M) & MASK32) ^ k
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * M) & MASK32
    h ^= h >> 13
    h = (h * M) & MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``)."""
    return number & 0x7FFFFFFF


def partition_for_key(key: bytes | bytearray | memoryview, partitions: int) -> int:
    return to_positive(murmur2(key)) % partitions


def murmur2_array(lengths: np.ndarray, blob: bytes | bytearray | memoryview) -> np.ndarray:
    """``murmur2`` of every key at once: key ``i`` is ``blob[starts[i] : starts[i] + lengths[i]]``
    with the keys back to back in ``blob``. Returns int64 values of the unsigned 32-bit hashes.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    count = len(lengths)
    if count == 0:
        return np.empty(0, dtype=np.int64)
    data = np.frombuffer(blob, dtype=np.uint8)
    # Pad so that reading 4 bytes past any key never runs off the end.
    padded = np.zeros(len(data) + 4, dtype=np.uint32)
    padded[: len(data)] = data
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    m = np.uint64(M)
    mask = np.uint64(MASK32)
    h = (np.uint64(SEED) ^ lengths.astype(np.uint64)) & mask
    words = lengths // 4
    for word in range(int(words.max()) if count else 0):
        live = words > word
        at = starts[live] + 4 * word
        k = (
            padded[at].astype(np.uint64)
            | (padded[at + 1].astype(np.uint64) << np.uint64(8))
            | (padded[at + 2].astype(np.uint64) << np.uint64(16))
            | (padded[at + 3].astype(np.uint64) << np.uint64(24))
        )
        k = (k * m) & mask
        k ^= k >> np.uint64(R)
        k = (k * m) & mask
        h[live] = ((h[live] * m) & mask) ^ k
    tail = lengths & 3
    base = starts + (lengths & ~3)
    has_tail = tail > 0
    for shift, needed in ((16, 3), (8, 2), (0, 1)):
        hit = tail >= needed
        if hit.any():
            h[hit] ^= padded[base[hit] + needed - 1].astype(np.uint64) << np.uint64(shift)
    h[has_tail] = (h[has_tail] * m) & mask
    h ^= h >> np.uint64(13)
    h = (h * m) & mask
    h ^= h >> np.uint64(15)
    return h.astype(np.int64)


def partitions_for_keys(
    lengths: np.ndarray, blob: bytes | bytearray | memoryview, partitions: int
) -> np.ndarray:
    """``toPositive(murmur2(key)) % partitions`` for every key (int64 array)."""
    return (murmur2_array(lengths, blob) & 0x7FFFFFFF) % partitions


class Partitioner:
    """Chooses sticky partitions for keyless records and caches key hashes."""

    __slots__ = ("_hashes", "_random")

    def __init__(self, seed: int | None = None) -> None:
        self._hashes: dict[bytes, int] = {}
        self._random = random.Random(seed)

    def for_key(self, key: bytes, partitions: int) -> int:
        """``toPositive(murmur2(key)) % partitions``, from the cache when the key was seen."""
        positive = self._hashes.get(key)
        if positive is None:
            positive = to_positive(murmur2(key))
            if len(self._hashes) >= KEY_CACHE_SIZE:
                self._hashes.clear()
            self._hashes[key] = positive
        return positive % partitions

    def first_sticky(self, partitions: int) -> int:
        return self._random.randrange(partitions)

    def next_sticky(self, partitions: int, current: int) -> int:
        """Where keyless records go after the batch of ``current`` closed: another partition."""
        if partitions <= 1:
            return 0
        partition = self._random.randrange(partitions - 1)
        return partition + 1 if partition >= current else partition
