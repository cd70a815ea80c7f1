"""The message browser (``/topics/<name>/messages``), its live tail (server-sent events) and the
JSONL download of a range. The query parameters are ``browse.Query``'s: ``partition``,
``from`` (tail | offset | time), ``offset``, ``time``, ``limit``, ``format``, ``key``,
``contains``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from logstore.records import Record, decode_columns
from logstore.server.console import browse
from logstore.server.console.app import sse
from logstore.server.console.http import Response, StreamResponse
from logstore.server.console.pages.overview import topic_url
from logstore.server.console.render import attr, count, esc, table, timestamp
from logstore.server.console.routes import Context
from logstore.storage import PartitionLog

if TYPE_CHECKING:
    from logstore.server.console.app import Console

#: The live tail sends at most this many records per second-ish burst to one page.
TAIL_MAX_RECORDS_PER_EVENT = 200


def _open(ctx: Context, topic: str, max_limit: int) -> tuple[browse.Query, PartitionLog]:
    ctx.require_read("topic", topic)
    partitions = ctx.broker.data_dir.topic(topic).partitions
    query = browse.parse_query(ctx.request.query, partitions, max_limit=max_limit)
    return query, ctx.broker.data_dir.log(topic, query.partition)


def _params(query: browse.Query, **changes: Any) -> str:
    query = dataclasses.replace(query, **changes)
    params: dict[str, Any] = {"partition": query.partition, "from": query.mode, "limit": query.limit, "format": query.fmt}
    if query.mode == "offset":
        params["offset"] = query.offset
    if query.mode == "time":
        params["time"] = query.time_ms
    if query.key:
        params["key"] = query.key
    if query.contains:
        params["contains"] = query.contains
    return urlencode(params)


def shown(record: Record, fmt: str) -> dict[str, Any]:
    """One record as the page and the live tail show it (kinds and texts, no HTML)."""
    key_kind, key_text = browse.show(record.key, "text" if fmt == "auto" else fmt)
    value_kind, value_text = browse.show(record.value, fmt)
    headers = ", ".join(
        f"{k}={'null' if v is None else v.decode('utf-8', errors='replace')}" for k, v in record.headers
    )
    return {
        "offset": record.offset, "timestamp": timestamp(record.timestamp),
        "key": [key_kind, key_text], "value": [value_kind, value_text], "headers": headers,
    }


def record_row(item: dict[str, Any]) -> str:
    key_kind, key_text = item["key"]
    value_kind, value_text = item["value"]
    return (
        f'<tr data-offset="{item["offset"]}"><td>{item["offset"]}</td><td>{esc(item["timestamp"])}</td>'
        f'<td><pre class={attr("k-" + key_kind)}>{esc(key_text)}</pre></td>'
        f'<td><pre class={attr("k-" + value_kind)}>{esc(value_text)}</pre></td>'
        f"<td>{esc(item['headers'])}</td></tr>"
    )


def _field(name: str, label: str, control: str) -> str:
    return f'<div class="field"><label for="f-{name}">{esc(label)}</label>{control}</div>'


def _select(name: str, label: str, options: list[tuple[str, str]], chosen: str) -> str:
    items = "".join(
        f"<option value={attr(value)}{' selected' if value == chosen else ''}>{esc(text)}</option>"
        for value, text in options
    )
    return _field(name, label, f'<select id="f-{name}" name={attr(name)}>{items}</select>')


def _input(name: str, label: str, value: str, extra: str = "") -> str:
    return _field(name, label, f'<input id="f-{name}" name={attr(name)} value={attr(value)} {extra}>')


def _form(ctx: Context, topic: str, query: browse.Query, partitions: int) -> str:
    params = ctx.request.query
    return (
        f'<form method="get" action={attr(topic_url(topic, "/messages"))} class="browse" id="browse">'
        + _select("partition", "Partition", [(str(p), str(p)) for p in range(partitions)], str(query.partition))
        + _select("from", "From", [("tail", "the tail"), ("offset", "an offset"), ("time", "a time")], query.mode)
        + _input("offset", "Offset", params.get("offset", ""), 'inputmode="numeric"')
        + _input("time", "Time (UTC ISO 8601 or epoch ms)", params.get("time", ""), 'placeholder="2026-12-06T19:00:00Z"')
        + _input("limit", "Limit", str(query.limit), f'type="number" min="1" max="{browse.MAX_PAGE_LIMIT}"')
        + _select("format", "Show as", [(f, f) for f in browse.FORMATS], query.fmt)
        + _input("key", "Key is", query.key)
        + _input("contains", "Contains", query.contains)
        + '<div class="field"><button type="submit">Show</button></div></form>'
    )


async def messages(ctx: Context, topic: str) -> Response:
    query, log = _open(ctx, topic, browse.MAX_PAGE_LIMIT)
    page = browse.read_page(log, query)
    items = [shown(record, query.fmt) for record in page.records]
    base = topic_url(topic, "/messages")
    next_url = f"{base}?{_params(query, mode='offset', offset=page.next_offset)}"
    download_url = topic_url(topic, "/messages.jsonl") + "?" + _params(query)
    tail_url = topic_url(topic, "/tail") + "?" + _params(query, mode="offset", offset=page.log_end_offset)
    links = [
        "" if page.at_end else f'<a class="button" href={attr(next_url)}>Next page</a>',
        f'<a class="button" href={attr(download_url)}>Download JSONL</a>',
        f'<button type="button" id="tail" data-tail={attr(tail_url)} aria-pressed="false">Follow live tail</button>',
    ]
    scanned = f", scanned {count(page.scanned)}" if query.filtered else ""
    summary = (
        f'<p class="summary" data-testid="summary">Partition {query.partition}: log start '
        f'<b data-testid="log-start">{page.log_start_offset}</b>, log end <b data-testid="log-end">{page.log_end_offset}</b>. '
        f"Showing {count(len(items))} record(s) from offset {page.start_offset}{scanned}; "
        f"next offset {page.next_offset}.</p>"
    )
    body = (
        _form(ctx, topic, query, ctx.broker.data_dir.topic(topic).partitions)
        + summary
        + f'<p class="actions">{"".join(links)} <span id="tail-status" role="status"></span></p>'
        + table(("Offset", "Timestamp", "Key", "Value", "Headers"), (record_row(i) for i in items),
                empty="no records here", attrs='id="records" data-format=' + attr(query.fmt))
    )
    return ctx.page(f"Messages in {topic}", body, current="/topics")


async def tail(ctx: Context, topic: str) -> StreamResponse:
    """New records from ``offset`` (default: the log end) as ``event: records`` batches."""
    query, log = _open(ctx, topic, browse.MAX_PAGE_LIMIT)
    start = browse.start_offset(log, query) if query.mode == "offset" else log.log_end_offset
    key = query.key.encode() if query.key else None
    needle = query.contains.encode() if query.contains else None
    broker = ctx.broker

    async def chunks() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        yield sse("position", {"offset": start})
        stream = broker.subscribe(topic, query.partition, start)
        async with contextlib.aclosing(stream):
            async for outcome in stream:
                columns = decode_columns(bytes(outcome.records), min_offset=start)
                records = [r for r in columns.records(Record) if browse.matches(r, key, needle)]
                for first in range(0, len(records), TAIL_MAX_RECORDS_PER_EVENT):
                    part = records[first:first + TAIL_MAX_RECORDS_PER_EVENT]
                    yield sse("records", [shown(r, query.fmt) for r in part])
                yield sse("position", {"offset": outcome.next_offset})

    return StreamResponse(chunks(), headers=[("Cache-Control", "no-store")])


async def download(ctx: Context, topic: str) -> StreamResponse:
    """The range as JSON lines (``browse.jsonl``), at most MAX_DOWNLOAD_LIMIT records."""
    query, log = _open(ctx, topic, browse.MAX_DOWNLOAD_LIMIT)
    first = browse.start_offset(log, query)  # an offset out of range is refused before streaming

    async def chunks() -> AsyncIterator[bytes]:
        position, remaining = first, query.limit
        while remaining > 0:
            step = dataclasses.replace(query, mode="offset", offset=position, limit=min(remaining, browse.MAX_PAGE_LIMIT))
            page = browse.read_page(log, step)
            if page.records:
                yield b"".join(browse.jsonl(query.partition, r) for r in page.records)
            remaining -= len(page.records)
            if page.at_end or page.next_offset <= position:
                return
            position = page.next_offset
            await asyncio.sleep(0)  # let the broker serve others between pages

    filename = f"{topic}-{query.partition}-{first}.jsonl"
    return StreamResponse(
        chunks(), content_type="application/x-ndjson; charset=utf-8",
        headers=[("Content-Disposition", f'attachment; filename="{filename}"')],
    )


def register(console: Console) -> None:
    console.router.add("GET", "/topics/{topic}/messages", messages)
    console.router.add("GET", "/topics/{topic}/messages.jsonl", download)
    console.router.add("GET", "/topics/{topic}/tail", tail)
