"""Protocol Buffers base-128 varints (and skipping a field), the pieces of the wire format that the
hand-made readers and writers all need (``server/wire.py``, ``client/wire.py``,
``cluster/replica_wire.py``). No imports: any layer may use it.

Layout: 7 bits per byte, least significant group first, the high bit set on every byte but the
last; at most 10 bytes (64 bits). A negative int32/int64 is written as its 64-bit two's
complement, so it always takes 10 bytes.
"""

from __future__ import annotations

from typing import Any

MAX_VARINT_BYTES = 10
_U64 = 1 << 64


def encode_varint(value: int) -> bytes:
    """``value`` as a varint; a negative one as its 64-bit two's complement."""
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: Any, position: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``position`` of a bytes-like ``data``; the value
    is unsigned. ValueError if it runs past the end or is longer than 10 bytes."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if position >= end:
            raise ValueError("a varint runs past the end")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise ValueError("a varint is too long")


def skip_field(data: Any, position: int, wire_type: int) -> int:
    """The position after the value of a field of ``wire_type`` (0 varint, 1 fixed64, 2 length
    and bytes, 5 fixed32) starting at ``position``: for skipping fields a reader does not know.
    ValueError on any other wire type."""
    if wire_type == 0:
        return decode_varint(data, position)[1]
    if wire_type == 1:
        return position + 8
    if wire_type == 5:
        return position + 4
    if wire_type == 2:
        length, position = decode_varint(data, position)
        return position + length
    raise ValueError(f"unsupported wire type {wire_type}")
