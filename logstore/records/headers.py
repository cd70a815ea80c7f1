"""Record headers: the bytes behind one record's ``headers_length``.

Each record's headers are a sequence of entries, each::

    key_length    <u2   bytes of the UTF-8 key
    key           key_length bytes
    value_length  <i4   -1 = null value
    value         value_length bytes

Headers are rare on the throughput path, so this is the one place in ``records`` that loops in
Python per header; batches without headers never reach it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from logstore.errors import CorruptBatchError

Header = tuple[str, bytes | None]
Headers = tuple[Header, ...]

KEY_LENGTH = struct.Struct("<H")
VALUE_LENGTH = struct.Struct("<i")
MAX_KEY_BYTES = 0xFFFF
NO_HEADERS: Headers = ()


def encode_headers(headers: Iterable[tuple[str | bytes, bytes | str | None]] | None) -> bytes:
    """Encode one record's headers (a list of (key, value) pairs, or a dict's items())."""
    if not headers:
        return b""
    parts: list[bytes] = []
    for key, value in headers:
        key_bytes = key.encode() if isinstance(key, str) else bytes(key)
        if len(key_bytes) > MAX_KEY_BYTES:
            raise ValueError(f"header key of {len(key_bytes)} bytes exceeds {MAX_KEY_BYTES}")
        parts.append(KEY_LENGTH.pack(len(key_bytes)))
        parts.append(key_bytes)
        if value is None:
            parts.append(VALUE_LENGTH.pack(-1))
        else:
            value_bytes = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(VALUE_LENGTH.pack(len(value_bytes)))
            parts.append(value_bytes)
    return b"".join(parts)


def decode_headers(data: bytes | memoryview) -> Headers:
    """Decode one record's headers; raises CorruptBatchError when the lengths do not add up."""
    data = bytes(data)
    headers: list[Header] = []
    position = 0
    end = len(data)
    while position < end:
        if position + KEY_LENGTH.size > end:
            raise CorruptBatchError("record header key length runs past the headers")
        (key_length,) = KEY_LENGTH.unpack_from(data, position)
        position += KEY_LENGTH.size
        key_end = position + key_length
        if key_end + VALUE_LENGTH.size > end:
            raise CorruptBatchError("record header key runs past the headers")
        try:
            key = data[position:key_end].decode()
        except UnicodeDecodeError as exc:
            raise CorruptBatchError("record header key is not UTF-8") from exc
        (value_length,) = VALUE_LENGTH.unpack_from(data, key_end)
        position = key_end + VALUE_LENGTH.size
        if value_length == -1:
            headers.append((key, None))
            continue
        if value_length < 0 or position + value_length > end:
            raise CorruptBatchError("record header value runs past the headers")
        headers.append((key, data[position : position + value_length]))
        position += value_length
    return tuple(headers)


def normalize_headers(
    headers: Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None,
) -> list[tuple[str, bytes | str | None]] | None:
    if headers is None:
        return None
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)
