"""Compression of a batch's record section with zstd or lz4 (frame format).

The codec is recorded in the batch attributes (``layout.CODEC_MASK``). Decompression is bounded by
``max_size`` so that a lying frame cannot make a reader allocate more than a batch may hold.
"""

from __future__ import annotations

import lz4.frame
import zstandard

from logstore.errors import CorruptBatchError
from logstore.records.layout import CODEC_LZ4, CODEC_NAMES, CODEC_NONE, CODEC_ZSTD

_ZSTD_LEVEL = 3


def compress(codec: int, data: bytes) -> bytes:
    if codec == CODEC_NONE:
        return data
    if codec == CODEC_ZSTD:
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(data)
    if codec == CODEC_LZ4:
        return lz4.frame.compress(data, store_size=True)
    raise ValueError(f"unknown codec {codec}")


def decompress(codec: int, data: bytes | memoryview, max_size: int) -> bytes:
    """Decompress a record section; CorruptBatchError if it is damaged or exceeds ``max_size``."""
    try:
        if codec == CODEC_ZSTD:
            params = zstandard.get_frame_parameters(data)
            # a frame without a content size is bounded by max_output_size instead
            if params.content_size != zstandard.CONTENTSIZE_UNKNOWN and params.content_size > max_size:
                raise CorruptBatchError(
                    f"zstd record section claims {params.content_size} bytes, over {max_size}"
                )
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_size)
        if codec == CODEC_LZ4:
            info = lz4.frame.get_frame_info(data)
            size = info.get("content_size") or 0
            if size == 0 or size > max_size:
                raise CorruptBatchError(f"lz4 record section claims {size} bytes, limit {max_size}")
            return lz4.frame.decompress(data)
    except CorruptBatchError:
        raise
    except Exception as exc:  # zstd.ZstdError, RuntimeError from lz4, ValueError
        name = CODEC_NAMES.get(codec, str(codec))
        raise CorruptBatchError(f"cannot decompress {name} record section: {exc}") from exc
    raise CorruptBatchError(f"unknown compression codec {codec}")
