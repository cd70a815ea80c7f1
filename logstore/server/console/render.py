"""HTML building blocks: escaping, the page layout, tables, numbers, charts.

Pages are server-rendered by plain functions that return HTML strings. Every value that comes
from a request or from stored data goes through ``esc`` (or ``attr``) before it is put in a
page; the live-update script only ever sets ``textContent``, never HTML.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from logstore import __version__


def esc(value: object) -> str:
    """Text content: escaped for HTML."""
    return html.escape(str(value), quote=True)


def attr(value: object) -> str:
    """An attribute value, quoted and escaped."""
    return f'"{html.escape(str(value), quote=True)}"'


def count(value: int | float) -> str:
    """1234567 -> '1,234,567'; floats to at most one decimal."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def size(value_bytes: int | float) -> str:
    """Bytes in binary units: '0 B', '1.5 KiB', '12.0 MiB'."""
    value = float(value_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def timestamp(ms: int) -> str:
    """A record or commit time in UTC: '2026-12-06 19:43:38.123Z' ('-' for none)."""
    if ms <= 0:
        return "-"
    seconds, millis = divmod(int(ms), 1000)
    try:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return f"{text}.{millis:03d}Z"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def table(headers: Sequence[str], rows: Iterable[str], *, caption: str = "", empty: str = "none",
          attrs: str = "") -> str:
    """A table; ``rows`` are already-rendered ``<tr>`` strings."""
    body = "".join(rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{esc(empty)}</td></tr>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table {attrs}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def row(*cells: str, live: Sequence[str | None] = ()) -> str:
    """A ``<tr>`` of already-rendered cells; ``live[i]`` names a cell the live stream updates."""
    parts = []
    for index, cell in enumerate(cells):
        key = live[index] if index < len(live) else None
        extra = f" data-live={attr(key)}" if key else ""
        parts.append(f"<td{extra}>{cell}</td>")
    return "<tr>" + "".join(parts) + "</tr>"


def stat(label: str, value: str, live: str | None = None) -> str:
    """A labelled number in the summary strip."""
    extra = f" data-live={attr(live)}" if live else ""
    return f'<div class="stat"><dt>{esc(label)}</dt><dd{extra}>{value}</dd></div>'


def stats(*items: str) -> str:
    return f'<dl class="stats">{"".join(items)}</dl>'


def chart(name: str, title: str, series: Sequence[str], points: Sequence[Sequence[float]], unit: str) -> str:
    """An SVG line chart drawn by console.js from ``points`` ([t_s, y1, y2, ...] each) and
    extended by the page's live stream (events carrying ``charts[name]``)."""
    data = json.dumps([list(p) for p in points], separators=(",", ":"))
    legend = "".join(
        f'<span class="series s{index}">{esc(label)}</span>' for index, label in enumerate(series)
    )
    return (
        f'<figure class="chart"><figcaption>{esc(title)} <span class="legend">{legend}</span></figcaption>'
        f'<svg data-chart={attr(name)} data-unit={attr(unit)} data-points={attr(data)} '
        f'viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label={attr(title)}></svg>'
        f"</figure>"
    )


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name={attr(name)} value={attr(value)}>'


@dataclass(frozen=True)
class NavEntry:
    label: str
    href: str


@dataclass
class Layout:
    """The frame every page shares. ``nav`` is where pages added later (share groups, the
    cluster) list themselves."""

    nav: list[NavEntry] = field(
        default_factory=lambda: [
            NavEntry("Overview", "/"),
            NavEntry("Topics", "/topics"),
            NavEntry("Consumer groups", "/groups"),
        ]
    )

    def page(self, title: str, body: str, *, principal: str, csrf: str = "", sse: str = "",
             current: str = "", logged_in: bool = False) -> str:
        current_mark = ' aria-current="page"'
        links = "".join(
            f"<a href={attr(entry.href)}{current_mark if entry.href == current else ''}>"
            f"{esc(entry.label)}</a>"
            for entry in self.nav
        )
        logout = (
            f'<form method="post" action="/logout" class="inline">{hidden("csrf", csrf)}'
            f'<button type="submit" class="link">Log out</button></form>'
            if logged_in else ""
        )
        live = f" data-sse={attr(sse)}" if sse else ""
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · logstore</title>"
            '<link rel="stylesheet" href="/static/console.css">'
            '<script src="/static/console.js" defer></script></head>'
            f"<body{live}>"
            '<a class="skip" href="#main">Skip to content</a>'
            f'<header><nav aria-label="Main"><a class="brand" href="/">logstore</a>{links}</nav>'
            f'<div class="who">signed in as <b>{esc(principal)}</b> {logout}</div></header>'
            f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{body}</main>'
            f'<footer>logstore {esc(__version__)} · <span data-live="clock"></span></footer>'
            "</body></html>"
        )

    def error(self, status: int, title: str, message: str, reason: str, *, principal: str) -> str:
        body = (
            f'<div class="error" role="alert"><p class="message">{esc(message)}</p>'
            f"<p>HTTP {status} · reason <code>{esc(reason)}</code></p>"
            '<p><a href="/">Back to the overview</a></p></div>'
        )
        return self.page(title, body, principal=principal)
