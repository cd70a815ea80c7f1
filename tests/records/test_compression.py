"""compression.py: zstd and lz4 record sections, bounded decompression."""

from __future__ import annotations

import lz4.frame
import pytest
import zstandard

from logstore.errors import CorruptBatchError
from logstore.records import CODEC_LZ4, CODEC_NONE, CODEC_ZSTD, decode_records, encode_batch
from logstore.records.compression import compress, decompress

DATA = b"the same words again and again " * 200


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_LZ4])
def test_round_trip(codec):
    packed = compress(codec, DATA)
    assert len(packed) < len(DATA) // 5
    assert decompress(codec, packed, len(DATA)) == DATA
    assert decompress(codec, memoryview(packed), len(DATA)) == DATA


def test_none_passes_data_through():
    assert compress(CODEC_NONE, DATA) is DATA


def test_compress_with_unknown_codec_raises_value_error():
    with pytest.raises(ValueError, match="unknown codec"):
        compress(5, DATA)


def test_decompress_with_unknown_codec_is_corrupt():
    with pytest.raises(CorruptBatchError, match="codec"):
        decompress(5, DATA, 1 << 20)


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_LZ4])
def test_garbage_is_corrupt(codec):
    with pytest.raises(CorruptBatchError):
        decompress(codec, b"\x00not a frame at all" * 3, 1 << 20)


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_LZ4])
def test_truncated_frame_is_corrupt(codec):
    packed = compress(codec, DATA)
    with pytest.raises(CorruptBatchError):
        decompress(codec, packed[: len(packed) // 2], 1 << 20)


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_LZ4])
def test_frame_larger_than_the_limit_is_corrupt(codec):
    with pytest.raises(CorruptBatchError, match="claims"):
        decompress(codec, compress(codec, DATA), len(DATA) - 1)


def test_zstd_frame_without_a_content_size_is_still_bounded():
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(DATA)
    assert decompress(CODEC_ZSTD, packed, len(DATA)) == DATA
    with pytest.raises(CorruptBatchError):
        decompress(CODEC_ZSTD, packed, 100)


def test_lz4_frame_without_a_content_size_is_corrupt():
    packed = lz4.frame.compress(DATA, store_size=False)
    with pytest.raises(CorruptBatchError, match="lz4"):
        decompress(CODEC_LZ4, packed, 1 << 20)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_batches_are_smaller_and_decode_the_same(codec):
    values = [b"repetitive value %d " % (i % 3) * 10 for i in range(100)]
    plain = encode_batch(values, timestamps=0)
    packed = encode_batch(values, timestamps=0, codec=codec)
    assert len(packed) < len(plain) // 4
    assert [r.value for r in decode_records(packed)] == [r.value for r in decode_records(plain)]
