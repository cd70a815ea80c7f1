"""The message browser's reading: where to start, which records match, how to show bytes.

A browse query names one partition and a start: ``offset`` (a record's number, which must lie in
[log start, log end]), ``time`` (the first record at or after it: epoch milliseconds, or an ISO
8601 date and time, UTC unless it carries an offset), or ``tail`` (the last ``limit`` records).
From there records are read in order; a ``key`` filter keeps records whose key is exactly that
text, a ``contains`` filter records whose key or value holds that text. A filtered page scans at
most ``SCAN_BUDGET_RECORDS`` records and says where it stopped, so a miss costs a bounded read.
Transaction markers are not records and are skipped; aborted records are shown (read
uncommitted), like ``logstore consume`` does.

Shown bytes: ``auto`` picks JSON if the bytes parse as a JSON object or array (indented when its
one-line form is longer than ``PRETTY_ABOVE_CHARS``), text if
they are UTF-8, else hex; ``text``, ``json`` and ``hex`` force one (JSON falls back to text when
the bytes do not parse). At most ``MAX_SHOWN_BYTES`` of each are shown.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from logstore.errors import InvalidRequestError, OffsetOutOfRangeError
from logstore.records import Record, decode_columns
from logstore.storage import PartitionLog

#: The most records one page may show.
MAX_PAGE_LIMIT = 1000
#: The most records one JSONL download may hold.
MAX_DOWNLOAD_LIMIT = 100_000
DEFAULT_LIMIT = 50
#: A filtered page reads at most this many records looking for matches.
SCAN_BUDGET_RECORDS = 50_000
READ_CHUNK_BYTES = 1 << 20
MAX_SHOWN_BYTES = 4096
#: JSON whose one-line form is longer than this is shown indented; shorter stays on one line.
PRETTY_ABOVE_CHARS = 60
MODES = ("tail", "offset", "time")
FORMATS = ("auto", "text", "json", "hex")
#: A filter text longer than this is refused.
MAX_FILTER_CHARS = 1000


@dataclass(frozen=True)
class Query:
    partition: int = 0
    mode: str = "tail"
    offset: int = 0
    time_ms: int = 0
    limit: int = DEFAULT_LIMIT
    key: str = ""
    contains: str = ""
    fmt: str = "auto"

    @property
    def filtered(self) -> bool:
        return bool(self.key or self.contains)


@dataclass
class BrowsePage:
    records: list[Record] = field(default_factory=list)
    start_offset: int = 0
    #: Where the next page starts (one past the last record read).
    next_offset: int = 0
    log_start_offset: int = 0
    log_end_offset: int = 0
    scanned: int = 0

    @property
    def at_end(self) -> bool:
        return self.next_offset >= self.log_end_offset


def _integer(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a whole number, not {text[:40]!r}", field=name) from None
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high}, not {value}", field=name)
    return value


def parse_time(text: str) -> int:
    """Epoch milliseconds, or ISO 8601 (UTC unless it says otherwise) -> epoch milliseconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"time must be epoch milliseconds or an ISO 8601 date and time, not {text[:40]!r}", field="time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_query(params: dict[str, str], partitions: int, *, max_limit: int = MAX_PAGE_LIMIT) -> Query:
    """A browse query from URL parameters; InvalidRequestError naming the bad one."""
    partition = _integer(params, "partition", 0, 0, (1 << 31) - 1)
    if partition >= partitions:
        raise InvalidRequestError(
            f"partition must be between 0 and {partitions - 1}, not {partition}", field="partition"
        )
    mode = params.get("from", "tail") or "tail"
    if mode not in MODES:
        raise InvalidRequestError(f"from must be one of {', '.join(MODES)}, not {mode[:40]!r}", field="from")
    fmt = params.get("format", "auto") or "auto"
    if fmt not in FORMATS:
        raise InvalidRequestError(f"format must be one of {', '.join(FORMATS)}, not {fmt[:40]!r}", field="format")
    offset = _integer(params, "offset", 0, 0, (1 << 63) - 1)
    time_ms = 0
    if mode == "time":
        if not params.get("time", "").strip():
            raise InvalidRequestError("from=time needs a time", field="time")
        time_ms = parse_time(params["time"])
    if mode == "offset" and not params.get("offset", "").strip():
        raise InvalidRequestError("from=offset needs an offset", field="offset")
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, max_limit)
    key, contains = params.get("key", ""), params.get("contains", "")
    for name, value in (("key", key), ("contains", contains)):
        if len(value) > MAX_FILTER_CHARS:
            raise InvalidRequestError(f"{name} may hold at most {MAX_FILTER_CHARS} characters", field=name)
    return Query(partition, mode, offset, time_ms, limit, key, contains, fmt)


def start_offset(log: PartitionLog, query: Query) -> int:
    start, end = log.log_start_offset, log.log_end_offset
    if query.mode == "offset":
        if not start <= query.offset <= end:
            raise OffsetOutOfRangeError(
                topic=log.topic, partition=log.partition, offset=query.offset,
                log_start_offset=start, log_end_offset=end,
            )
        return query.offset
    if query.mode == "time":
        found = log.offset_for_timestamp(query.time_ms)
        return end if found is None else found
    return max(start, end - query.limit)


def read_page(log: PartitionLog, query: Query, *, scan_budget: int = SCAN_BUDGET_RECORDS) -> BrowsePage:
    """Up to ``query.limit`` matching records from the query's start."""
    first = start_offset(log, query)
    page = BrowsePage(start_offset=first, next_offset=first)
    key = query.key.encode() if query.key else None
    needle = query.contains.encode() if query.contains else None
    position = first
    while len(page.records) < query.limit and page.scanned < scan_budget:
        result = log.read(position, READ_CHUNK_BYTES)
        page.log_start_offset, page.log_end_offset = result.log_start_offset, result.log_end_offset
        if not result.data:
            break
        columns = decode_columns(bytes(result.data), min_offset=position)
        full = False
        for record in columns.records(Record):
            page.scanned += 1
            if matches(record, key, needle):
                page.records.append(record)
                if len(page.records) >= query.limit:
                    position, full = record.offset + 1, True
                    break
        if full or result.next_offset <= position:
            break
        position = result.next_offset
    page.next_offset = max(position, first)
    if not page.log_end_offset:
        page.log_start_offset, page.log_end_offset = log.log_start_offset, log.log_end_offset
    return page


def matches(record: Record, key: bytes | None, needle: bytes | None) -> bool:
    if key is not None and record.key != key:
        return False
    if needle is not None:
        return needle in (record.value or b"") or needle in (record.key or b"")
    return True


def show(data: bytes | None, fmt: str = "auto") -> tuple[str, str]:
    """(kind, text) for display: kind is null, text, json or hex."""
    if data is None:
        return "null", "null"
    extra = ""
    if len(data) > MAX_SHOWN_BYTES:
        extra = f"\n… ({len(data)} bytes, first {MAX_SHOWN_BYTES} shown)"
    if fmt == "hex":
        return "hex", data[:MAX_SHOWN_BYTES].hex(" ") + extra
    if fmt in ("auto", "json") and data[:1] in (b"{", b"[") or fmt == "json":
        try:
            parsed = json.loads(data)
            if fmt == "json" or isinstance(parsed, dict | list):
                text = json.dumps(parsed, ensure_ascii=False)  # the C encoder: fast
                if len(text) > PRETTY_ABOVE_CHARS:  # indenting takes the pure-Python encoder
                    text = json.dumps(parsed, indent=2, ensure_ascii=False)
                return "json", text[:MAX_SHOWN_BYTES * 2] + extra
        except (ValueError, RecursionError):
            pass
    try:
        return "text", data[:MAX_SHOWN_BYTES].decode("utf-8") + extra
    except UnicodeDecodeError:
        if fmt == "text" or fmt == "json":
            return "text", data[:MAX_SHOWN_BYTES].decode("utf-8", errors="replace") + extra
        return "hex", data[:MAX_SHOWN_BYTES].hex(" ") + extra


def jsonl(partition: int, record: Record) -> bytes:
    """One download line: key and value as UTF-8 text, or ``key_base64``/``value_base64``."""
    line: dict[str, object] = {"partition": partition, "offset": record.offset, "timestamp": record.timestamp}
    for name, data in (("key", record.key), ("value", record.value)):
        if data is None:
            line[name] = None
            continue
        try:
            line[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            line[f"{name}_base64"] = base64.b64encode(data).decode()
    if record.headers:
        line["headers"] = {
            k: (None if v is None else v.decode("utf-8", errors="replace")) for k, v in record.headers
        }
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"
