"""Record batches: bytes in, batches and records out. No file or network I/O (sans-IO).

See ``layout.py`` for the byte layout.
"""

from logstore.records.batch import (
    BatchHeader,
    iter_headers,
    iter_spans,
    read_header,
    record_section,
    validate_batch,
    validate_batches,
    walk_positions,
)
from logstore.records.decode import Record, RecordColumns, decode_columns, decode_records
from logstore.records.encode import encode_batch, encode_columns, now_ms
from logstore.records.headers import Headers, decode_headers, encode_headers
from logstore.records.layout import (
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_ZSTD,
    HEADER_SIZE,
    MAGIC,
    RECORD_OVERHEAD,
)

__all__ = [
    "CODEC_LZ4",
    "CODEC_NONE",
    "CODEC_ZSTD",
    "HEADER_SIZE",
    "MAGIC",
    "RECORD_OVERHEAD",
    "BatchHeader",
    "Headers",
    "Record",
    "RecordColumns",
    "decode_columns",
    "decode_headers",
    "decode_records",
    "encode_batch",
    "encode_columns",
    "encode_headers",
    "iter_headers",
    "iter_spans",
    "now_ms",
    "read_header",
    "record_section",
    "validate_batch",
    "validate_batches",
    "walk_positions",
]
