"""The overview (``/``) and the topic list (``/topics``, with the create-topic form).

The overview shows the broker's health, the cluster (``single node`` until the broker is
clustered: a cluster layer sets ``Console.cluster_view`` to list brokers, the controller and
under-replicated partitions), throughput in and out (records/s, bytes/s, a two-minute chart)
and disk use, then the topics the principal may read.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from logstore.server.console.http import Response
from logstore.server.console.render import (
    attr,
    chart,
    count,
    duration,
    esc,
    row,
    size,
    stat,
    stats,
    table,
)
from logstore.server.console.routes import Context
from logstore.server.console.sampler import Rates

if TYPE_CHECKING:
    from logstore.server.console.app import Console


@dataclass(frozen=True)
class BrokerRow:
    broker_id: str
    address: str
    health: str
    controller: bool


@dataclass(frozen=True)
class ClusterView:
    """What a clustered broker shows on the overview."""

    brokers: list[BrokerRow]
    under_replicated_partitions: int


#: Set by the cluster layer when the broker runs clustered; None means a single node.
ClusterProvider = Callable[[], ClusterView]


RATE_STATS = (
    ("Records/s in", "records_in"), ("Bytes/s in", "bytes_in"),
    ("Records/s out", "records_out"), ("Bytes/s out", "bytes_out"),
)


def rate_values(rates: Rates) -> dict[str, str]:
    """The live values of a rate strip (the keys of RATE_STATS)."""
    return {
        "records_in": count(round(rates.records_in, 1)),
        "bytes_in": size(rates.bytes_in) + "/s",
        "records_out": count(round(rates.records_out, 1)),
        "bytes_out": size(rates.bytes_out) + "/s",
    }


def rate_stats(values: dict[str, str]) -> list[str]:
    return [stat(label, values[key], key) for label, key in RATE_STATS]


def throughput_chart(ctx: Context, topic: str | None = None) -> str:
    history = ctx.console.sampler.rate_history(topic)
    return chart("throughput", "Records per second", ("in", "out"), history, "records/s")


def topic_url(name: str, suffix: str = "") -> str:
    return f"/topics/{quote(name, safe='')}{suffix}"


def visible_topics(ctx: Context) -> list[tuple[str, int]]:
    return [(name, partitions) for name, partitions, _ in ctx.broker.list_topics() if ctx.can_read("topic", name)]


def _disk(ctx: Context) -> tuple[int, int]:
    """(bytes in partitions, bytes free on the data directory's file system)."""
    used = sum(stat_[4] for stat_ in ctx.broker.partition_stats())
    try:
        free = shutil.disk_usage(ctx.broker.data_dir.path).free
    except OSError:
        free = 0
    return used, free


def _topic_rows(ctx: Context) -> tuple[list[str], dict[str, Any]]:
    """Rows of the topic table, and the live values that update them."""
    rows, values = [], {}
    sampler = ctx.console.sampler
    for name, partitions in visible_topics(ctx):
        description = ctx.broker.describe_topic(name)
        records = sum(p.log_end_offset - p.log_start_offset for p in description.partitions)
        rate = sampler.rates(name)
        values[f"topic.{name}.records"] = count(records)
        values[f"topic.{name}.size"] = size(description.size_bytes)
        values[f"topic.{name}.in"] = count(round(rate.records_in, 1))
        values[f"topic.{name}.out"] = count(round(rate.records_out, 1))
        rows.append(
            row(
                f"<a href={attr(topic_url(name))}>{esc(name)}</a>", count(partitions),
                values[f"topic.{name}.records"], values[f"topic.{name}.size"],
                values[f"topic.{name}.in"], values[f"topic.{name}.out"],
                live=(None, None, f"topic.{name}.records", f"topic.{name}.size", f"topic.{name}.in", f"topic.{name}.out"),
            )
        )
    return rows, values


TOPIC_HEADERS = ("Topic", "Partitions", "Records", "Size", "Records/s in", "Records/s out")


def _live_values(ctx: Context) -> dict[str, Any]:
    used, free = _disk(ctx)
    topics = visible_topics(ctx)
    values = {
        "health": "shutting down" if ctx.broker.closing else "serving",
        "uptime": duration(time.time() - ctx.console.started_s),
        "topics": count(len(topics)),
        "partitions": count(sum(p for _, p in topics)),
        **rate_values(ctx.console.sampler.rates()),
        "disk_used": size(used),
        "disk_free": size(free),
        "clock": time.strftime("%H:%M:%S UTC", time.gmtime()),
    }
    return values


def _cluster(console: Console) -> str:
    provider: ClusterProvider | None = console.cluster_view
    if provider is None:
        return (
            '<section class="card"><h2>Cluster</h2><p data-testid="cluster-mode"><b>single node</b>: '
            "this broker is the whole cluster — its own controller, leader of every partition, "
            "no under-replicated partitions.</p></section>"
        )
    view = provider()
    rows = [
        row(esc(b.broker_id), esc(b.address), esc(b.health), "controller" if b.controller else "")
        for b in view.brokers
    ]
    return (
        f'<section class="card"><h2>Cluster</h2>{table(("Broker", "Address", "Health", "Role"), rows)}'
        f"<p>Under-replicated partitions: <b>{count(view.under_replicated_partitions)}</b></p></section>"
    )


async def overview(ctx: Context) -> Response:
    values = _live_values(ctx)
    rows, _ = _topic_rows(ctx)
    body = (
        stats(
            stat("Health", esc(values["health"]), "health"),
            stat("Uptime", esc(values["uptime"]), "uptime"),
            stat("Topics", values["topics"], "topics"),
            stat("Partitions", values["partitions"], "partitions"),
            *rate_stats(values),
            stat("Disk used", values["disk_used"], "disk_used"),
            stat("Disk free", values["disk_free"], "disk_free"),
        )
        + f'<p class="hint">Broker pid {os.getpid()}, data directory <code>{esc(ctx.broker.data_dir.path)}</code>.</p>'
        + throughput_chart(ctx)
        + _cluster(ctx.console)
        + f'<section><h2>Topics</h2>{table(TOPIC_HEADERS, rows, empty="no topics yet")}</section>'
    )
    return ctx.page("Overview", body, sse="/events/overview", current="/")


async def overview_events(ctx: Context) -> Any:
    def snapshot() -> dict[str, Any]:
        values = _live_values(ctx)
        values.update(_topic_rows(ctx)[1])
        history = ctx.console.sampler.rate_history()
        return {"values": values, "charts": {"throughput": history[-1:]}}

    return ctx.console.live(snapshot)


async def topics(ctx: Context) -> Response:
    rows, _ = _topic_rows(ctx)
    form = ""
    if ctx.can_write_some("topic"):
        form = (
            '<section class="card"><h2>Create a topic</h2>'
            '<form method="post" action="/topics" class="grid">'
            f"{ctx.csrf_field()}"
            '<label for="name">Name</label><input id="name" name="name" required pattern="[A-Za-z0-9._-]{1,249}">'
            '<label for="partitions">Partitions</label>'
            '<input id="partitions" name="partitions" type="number" min="1" value="1" required>'
            '<label for="config">Config (key=value per line)</label><textarea id="config" name="config" rows="3"></textarea>'
            '<button type="submit">Create</button></form>'
            '<p class="hint">Needs admin rights on the topic.</p></section>'
        )
    body = f"{table(TOPIC_HEADERS, rows, empty='no topics yet')}{form}"
    return ctx.page("Topics", body, sse="/events/overview", current="/topics")


async def create_topic(ctx: Context) -> Response:
    form = ctx.request.form()
    name = form.get("name", "").strip()
    ctx.require_write("topic", name)
    from logstore.server.console.pages.topic import parse_config, parse_partitions

    ctx.broker.create_topic(name, parse_partitions(form.get("partitions", "1")), parse_config(form.get("config", "")))
    return ctx.redirect(topic_url(name))


def register(console: Console) -> None:
    console.router.add("GET", "/", overview)
    console.router.add("GET", "/events/overview", overview_events)
    console.router.add("GET", "/topics", topics)
    console.router.add("POST", "/topics", create_topic)
