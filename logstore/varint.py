"""Protocol Buffers base-128 varints, the one piece of the wire format that the server's hand-made
request parser and the client's hand-made messages both need (``server/wire.py``,
``client/wire.py``). No imports: any layer may use it.

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
