"""Share groups (queue mode): the list (``/queues``) and one group's page (``/queues/<group>``):
per share-partition the start offset, records available, acquired, acknowledged and archived,
the oldest unacknowledged record's age, redeliveries and dead letters; the members; the group's
config. Read-only (configure and reset with ``Admin`` or ``logstore queue``).

In the restaurant: a share group is the ticket spike. Any free cook takes the next ticket
(acquired, under a lock); a done ticket is spiked (acknowledged); a ticket burnt too often goes
to the manager's tray (archived, dead-lettered).

Rights as the gRPC API's: a group needs ``read`` on the group, and a share-partition is shown
only when the principal may read its topic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from logstore.broker.share import ShareGroupInfo
from logstore.server.console.pages.overview import topic_url
from logstore.server.console.render import (
    NavEntry,
    attr,
    count,
    duration,
    esc,
    row,
    stat,
    stats,
    table,
    timestamp,
)
from logstore.server.console.routes import Context

if TYPE_CHECKING:
    from logstore.server.console.app import Console
    from logstore.server.console.http import Response

#: The totals of the list and the summary strip, as (label, live key suffix, partition field).
TOTALS = (
    ("Available", "available", "available"),
    ("Acquired", "acquired", "acquired"),
    ("Acknowledged", "acknowledged", "acknowledged"),
    ("Archived", "archived", "archived"),
    ("Redeliveries", "redeliveries", "redeliveries"),
    ("Dead-lettered", "dead_lettered", "dead_lettered"),
)
#: Config keys shown on a group's page, in this order (any others the broker reports follow).
CONFIG_KEYS = ("lock_ms", "max_deliveries", "backoff_ms", "dead_letter_topic", "max_acquired_records",
               "auto_offset_reset")


def queue_url(group_id: str, suffix: str = "") -> str:
    return f"/queues/{quote(group_id, safe='')}{suffix}"


def _info(ctx: Context, group_id: str) -> ShareGroupInfo:
    ctx.require_read("group", group_id)
    info: ShareGroupInfo = ctx.broker.describe_share_group(group_id)
    info.partitions = [p for p in info.partitions if ctx.can_read("topic", p.topic)]
    return info


def _totals(info: ShareGroupInfo) -> dict[str, int]:
    return {key: sum(getattr(p, name) for p in info.partitions) for _, key, name in TOTALS}


def _age(ms: int) -> str:
    return "-" if ms < 0 else duration(ms / 1000)


def _readable(ctx: Context) -> list[tuple[ShareGroupInfo, int]]:
    """(description, active members) of every share group the principal may read."""
    found = []
    for name, members, _ in ctx.broker.list_share_groups():
        if ctx.can_read("group", name):
            found.append((_info(ctx, name), members))
    return found


def _list_values(groups: list[tuple[ShareGroupInfo, int]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for info, members in groups:
        values[f"queue.{info.group_id}.members"] = count(members)
        for key, total in _totals(info).items():
            values[f"queue.{info.group_id}.{key}"] = count(total)
    return values


async def queue_list(ctx: Context) -> Response:
    groups = _readable(ctx)
    values = _list_values(groups)
    shown = [key for _, key, _ in TOTALS if key != "acknowledged"]
    rows = []
    for info, _ in groups:
        name = info.group_id
        topics = sorted({p.topic for p in info.partitions})
        live = [f"queue.{name}.members", *(f"queue.{name}.{key}" for key in shown)]
        rows.append(row(
            f"<a href={attr(queue_url(name))}>{esc(name)}</a>",
            ", ".join(f"<a href={attr(topic_url(t))}>{esc(t)}</a>" for t in topics) or "-",
            *(values[key] for key in live),
            live=(None, None, *live),
        ))
    headers = ("Group", "Topics", "Members", *(label for label, key, _ in TOTALS if key in shown))
    body = table(headers, rows, empty="no share groups yet", attrs='id="queues"')
    return ctx.page("Share groups", body, sse="/events/queues", current="/queues")


async def queue_list_events(ctx: Context) -> Any:
    return ctx.console.live(lambda: {"values": _list_values(_readable(ctx))})


def _values(info: ShareGroupInfo, members: int) -> dict[str, Any]:
    values: dict[str, Any] = {key: count(total) for key, total in _totals(info).items()}
    values["members"] = count(members)
    for p in info.partitions:
        key = f"{p.topic}.{p.partition}"
        values[f"{key}.start"] = count(p.start_offset)
        values[f"{key}.end"] = count(p.log_end_offset)
        for _, suffix, name in TOTALS:
            values[f"{key}.{suffix}"] = count(getattr(p, name))
        values[f"{key}.delayed"] = count(p.delayed)
        values[f"{key}.age"] = _age(p.oldest_unacknowledged_age_ms)
    return values


def _config(info: ShareGroupInfo) -> str:
    keys = [k for k in CONFIG_KEYS if k in info.config] + sorted(set(info.config) - set(CONFIG_KEYS))
    rows = [row(f"<code>{esc(k)}</code>", esc(info.config[k] or "-")) for k in keys]
    return table(("Key", "Value"), rows, empty="defaults", attrs='id="config"')


async def queue_page(ctx: Context, group: str) -> Response:
    info = _info(ctx, group)
    values = _values(info, len(info.members))
    columns = ("start", "end", "available", "acquired", "acknowledged", "archived", "delayed", "age",
               "redeliveries", "dead_lettered")
    partitions = []
    for p in info.partitions:
        key = f"{p.topic}.{p.partition}"
        live = [f"{key}.{c}" for c in columns]
        partitions.append(row(
            f"<a href={attr(topic_url(p.topic))}>{esc(p.topic)}</a>", str(p.partition),
            *(values[k] for k in live), live=(None, None, *live),
        ))
    members = [row(f"<code>{esc(m.member_id)}</code>", esc(timestamp(m.last_seen_ms)), count(m.acquired))
               for m in info.members]
    body = (
        stats(stat("Members", values["members"], "members"),
              *(stat(label, values[key], key) for label, key, _ in TOTALS))
        + "<section><h2>Share-partitions</h2>"
        + table(("Topic", "Partition", "Start offset", "Log end", "Available", "Acquired", "Acknowledged",
                 "Archived", "Delayed", "Oldest unacknowledged", "Redeliveries", "Dead-lettered"),
                partitions, empty="no partition read yet", attrs='id="partitions"')
        + "</section>"
        + f"<section><h2>Members</h2>{table(('Member', 'Last seen', 'Acquired'), members, empty='no active members')}</section>"
        + f'<section class="card"><h2>Config</h2>{_config(info)}'
        + '<p class="hint">Change it with <code>logstore queue config GROUP --set KEY=VALUE</code> '
          "or <code>Admin.alter_share_group_config</code>.</p></section>"
    )
    return ctx.page(f"Share group {group}", body, sse=queue_url(group, "/events"), current="/queues")


async def queue_events(ctx: Context, group: str) -> Any:
    _info(ctx, group)

    def snapshot() -> dict[str, Any]:
        info = _info(ctx, group)
        return {"values": _values(info, len(info.members))}

    return ctx.console.live(snapshot)


def register(console: Console) -> None:
    console.layout.nav.append(NavEntry("Share groups", "/queues"))
    console.router.add("GET", "/queues", queue_list)
    console.router.add("GET", "/events/queues", queue_list_events)
    console.router.add("GET", "/queues/{group}", queue_page)
    console.router.add("GET", "/queues/{group}/events", queue_events)
