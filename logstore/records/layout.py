"""The record batch byte layout, and the constants built from it.

A batch is the unit a producer sends, the broker appends, a segment stores and a fetch returns.
Everything is little-endian. The header is 64 bytes::

    position width field              type  notes
    0        8     base_offset        <i8   assigned by the broker on append
    8        4     batch_length       <i4   bytes of the whole batch, this header included
    12       4     leader_epoch       <i4   assigned by the broker (0 until replication)
    16       4     crc                <u4   crc32c of bytes [CRC_START, batch_length)
    20       1     magic              u1    format version, MAGIC (= 1)
    21       1     (reserved)         u1    0
    22       2     attributes         <u2   bits 0-2 codec, 4 transactional, 5 control, 6-9 below
    24       4     last_offset_delta  <i4   last record's offset - base_offset
    28       4     record_count       <i4
    32       8     base_timestamp     <i8   milliseconds since the epoch
    40       8     max_timestamp      <i8   largest record timestamp in the batch
    48       8     producer_id        <i8   -1 when not idempotent
    56       2     producer_epoch     <i2   -1 when not idempotent
    58       2     (reserved)         <i2   0
    60       4     base_sequence      <i4   -1 when not idempotent

The crc covers everything from ``magic`` to the end, so the broker assigns ``base_offset`` and
``leader_epoch`` by rewriting the first 16 bytes without recomputing it.

The record section follows the header, compressed as a whole when the codec is not NONE. It is laid
out for vectorised decoding: up to five fixed-width columns of ``record_count`` ``<i4`` each, in
this order, then the concatenated bytes::

    offset_delta[n]     record offset - base_offset, strictly increasing (gaps after compaction)
    timestamp_delta[n]  record timestamp - base_timestamp, milliseconds
    key_length[n]       -1 = null key
    value_length[n]     -1 = null value (a tombstone)
    headers_length[n]   0 = no headers
    keys                every non-null key, concatenated in record order
    values              every non-null value, concatenated
    headers             every record's encoded headers (see ``headers.py``), concatenated

A column that says nothing is left out, and an attribute bit says so (bits 6-9): dense offsets
(``offset_delta[i] = i``), one timestamp for the whole batch (every delta 0), no keys (every key
null), no headers (every length 0). ``value_length`` is always present. So a batch of plain values
costs 4 bytes per record besides the values, and a batch with every column costs 20.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = 1

HEADER_FORMAT = "<qiiIBBHiiqqqhhi"
HEADER_STRUCT = struct.Struct(HEADER_FORMAT)
HEADER_SIZE = HEADER_STRUCT.size  # 64
assert HEADER_SIZE == 64

#: numpy view of one header, field for field.
HEADER_DTYPE = np.dtype(
    [
        ("base_offset", "<i8"),
        ("batch_length", "<i4"),
        ("leader_epoch", "<i4"),
        ("crc", "<u4"),
        ("magic", "u1"),
        ("reserved1", "u1"),
        ("attributes", "<u2"),
        ("last_offset_delta", "<i4"),
        ("record_count", "<i4"),
        ("base_timestamp", "<i8"),
        ("max_timestamp", "<i8"),
        ("producer_id", "<i8"),
        ("producer_epoch", "<i2"),
        ("reserved2", "<i2"),
        ("base_sequence", "<i4"),
    ]
)
assert HEADER_DTYPE.itemsize == HEADER_SIZE

BASE_OFFSET_POSITION = 0
BATCH_LENGTH_POSITION = 8
LEADER_EPOCH_POSITION = 12
CRC_POSITION = 16
CRC_START = 20  # the crc covers [CRC_START, batch_length)
MAGIC_POSITION = 20
ATTRIBUTES_POSITION = 22
LAST_OFFSET_DELTA_POSITION = 24
RECORD_COUNT_POSITION = 28
BASE_TIMESTAMP_POSITION = 32
MAX_TIMESTAMP_POSITION = 40
PRODUCER_ID_POSITION = 48

#: The broker rewrites exactly these leading bytes on append: base_offset and leader_epoch.
ASSIGNED_PREFIX = struct.Struct("<qii")  # base_offset, batch_length, leader_epoch
ASSIGNED_PREFIX_SIZE = 16

#: Reading just enough of a header to walk a segment: base_offset, batch_length.
WALK_STRUCT = struct.Struct("<qi")
#: A header's first 28 bytes as a walk over batches needs them: base_offset, batch_length,
#: attributes, last_offset_delta (leader_epoch, crc, magic and the reserved byte skipped).
SPAN_STRUCT = struct.Struct("<qi10xHi")
assert SPAN_STRUCT.size == LAST_OFFSET_DELTA_POSITION + 4

COLUMN_COUNT = 5
COLUMN_WIDTH = 4
COLUMN_DTYPE = np.dtype("<i4")
OFFSET_DELTA, TIMESTAMP_DELTA, KEY_LENGTH, VALUE_LENGTH, HEADERS_LENGTH = range(COLUMN_COUNT)
#: The most a record costs besides its key, value and headers (every column present).
RECORD_OVERHEAD = COLUMN_COUNT * COLUMN_WIDTH

# -- attributes ---------------------------------------------------------------------------------

CODEC_MASK = 0x07
CODEC_NONE = 0
CODEC_ZSTD = 1
CODEC_LZ4 = 2
CODECS = {"none": CODEC_NONE, "zstd": CODEC_ZSTD, "lz4": CODEC_LZ4}
CODEC_NAMES = {value: name for name, value in CODECS.items()}
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DENSE_OFFSETS_FLAG = 0x40  # no offset_delta column: offsets are base_offset + 0..n-1
SAME_TIMESTAMP_FLAG = 0x80  # no timestamp_delta column: every record has base_timestamp
NO_KEYS_FLAG = 0x100  # no key_length column: every key is null
NO_HEADERS_FLAG = 0x200  # no headers_length column: no record has headers
#: The attribute bit that leaves out each column (value_length is never left out).
OMIT_FLAGS = (DENSE_OFFSETS_FLAG, SAME_TIMESTAMP_FLAG, NO_KEYS_FLAG, 0, NO_HEADERS_FLAG)
#: What an omitted column holds.
OMITTED_FILL = (None, 0, -1, None, 0)  # offsets are 0..n-1
KNOWN_ATTRIBUTES = (
    CODEC_MASK | TRANSACTIONAL_FLAG | CONTROL_FLAG
    | DENSE_OFFSETS_FLAG | SAME_TIMESTAMP_FLAG | NO_KEYS_FLAG | NO_HEADERS_FLAG
)


#: Every attribute bit that leaves out a column.
OMIT_MASK = DENSE_OFFSETS_FLAG | SAME_TIMESTAMP_FLAG | NO_KEYS_FLAG | NO_HEADERS_FLAG


def present_columns(attributes: int) -> int:
    """How many columns a batch with these attributes carries."""
    return COLUMN_COUNT - (attributes & OMIT_MASK).bit_count()

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1

#: Limits that keep a lying header from making a reader allocate the moon.
MAX_BATCH_LENGTH = (1 << 31) - 1
MAX_RECORD_COUNT = (1 << 31) - 1
