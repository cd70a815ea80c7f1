"""Consumer groups: the list (``/groups``) and one group's page (``/groups/<id>``): members and
their assignment, committed offset and lag per partition, lag over time; and the reset-offsets
action (admin rights on the group, and the group must have no active member).

In the restaurant: a group is a kitchen team; each cook (member) owns some rails (partitions);
a committed offset is the last dish the team marked finished, lag the tickets still hanging.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from logstore.broker.types import GroupInfo
from logstore.errors import InvalidRequestError
from logstore.server.console.browse import parse_time
from logstore.server.console.http import Response
from logstore.server.console.pages.overview import topic_url
from logstore.server.console.render import (
    attr,
    chart,
    count,
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

RESET_SPECS = ("earliest", "latest", "offset", "timestamp")


def group_url(group_id: str, suffix: str = "") -> str:
    return f"/groups/{quote(group_id, safe='')}{suffix}"


async def group_list(ctx: Context) -> Response:
    rows = []
    for name, state, members in ctx.broker.list_groups():
        if not ctx.can_read("group", name):
            continue
        lag = ctx.console.sampler.group_lag(name)
        rows.append(
            row(f"<a href={attr(group_url(name))}>{esc(name)}</a>", esc(state), count(members), count(lag),
                live=(None, f"group.{name}.state", f"group.{name}.members", f"group.{name}.lag"))
        )
    body = table(("Group", "State", "Members", "Lag"), rows, empty="no consumer groups yet")
    return ctx.page("Consumer groups", body, sse="/events/groups", current="/groups")


async def group_list_events(ctx: Context) -> Any:
    def snapshot() -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, state, members in ctx.broker.list_groups():
            if ctx.can_read("group", name):
                values[f"group.{name}.state"] = state
                values[f"group.{name}.members"] = count(members)
                values[f"group.{name}.lag"] = count(ctx.console.sampler.group_lag(name))
        return {"values": values}

    return ctx.console.live(snapshot)


def _info(ctx: Context, group_id: str) -> GroupInfo:
    ctx.require_read("group", group_id)
    info: GroupInfo = ctx.broker.describe_group(group_id)
    info.offsets = [o for o in info.offsets if ctx.can_read("topic", o.topic)]
    return info


def _values(info: GroupInfo) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state": info.state,
        "members": count(len(info.members)),
        "lag": count(sum(o.lag for o in info.offsets if o.error is None and o.lag > 0)),
        "epoch": count(info.group_epoch),
    }
    for o in info.offsets:
        key = f"{o.topic}.{o.partition}"
        values[f"{key}.committed"] = "-" if o.offset < 0 else count(o.offset)
        values[f"{key}.end"] = count(o.log_end_offset)
        values[f"{key}.lag"] = "-" if o.error is not None else count(o.lag)
    return values


def _reset_form(ctx: Context, info: GroupInfo) -> str:
    if not ctx.can_write("group", info.group_id):
        return ""
    topics = sorted({o.topic for o in info.offsets})
    topic_options = "".join(f"<option value={attr(t)}>{esc(t)}</option>" for t in topics)
    spec_options = "".join(f"<option value={attr(s)}>{esc(s)}</option>" for s in RESET_SPECS)
    return (
        '<section class="card"><h2>Reset offsets</h2>'
        f'<form method="post" action={attr(group_url(info.group_id, "/reset"))} class="grid">{ctx.csrf_field()}'
        f'<label for="rt">Topic</label><input id="rt" name="topic" list="group-topics" required>'
        f'<datalist id="group-topics">{topic_options}</datalist>'
        f'<label for="rs">To</label><select id="rs" name="spec">{spec_options}</select>'
        '<label for="rv">Offset or time (for offset / timestamp)</label><input id="rv" name="value">'
        '<button type="submit">Reset</button></form>'
        '<p class="hint">Only while the group has no active member; needs admin rights on the group.</p></section>'
    )


async def group_page(ctx: Context, group: str) -> Response:
    info = _info(ctx, group)
    values = _values(info)
    owners = {tp: m.member_id for m in info.members for tp in m.assignment}
    members = [
        row(f"<code>{esc(m.member_id)}</code>", esc(m.instance_id or "-"), count(m.member_epoch),
            esc(", ".join(m.topics)),
            esc(", ".join(f"{t}/{p}" for t, p in m.assignment) or "-"),
            esc(", ".join(f"{t}/{p}" for t, p in m.revoking) or "-"))
        for m in info.members
    ]
    offsets = []
    for o in info.offsets:
        key = f"{o.topic}.{o.partition}"
        offsets.append(
            row(f"<a href={attr(topic_url(o.topic))}>{esc(o.topic)}</a>", str(o.partition),
                values[f"{key}.committed"], values[f"{key}.end"], values[f"{key}.lag"],
                esc(timestamp(o.commit_timestamp_ms)), f"<code>{esc(owners.get((o.topic, o.partition), '-'))}</code>",
                live=(None, None, f"{key}.committed", f"{key}.end", f"{key}.lag"))
        )
    body = (
        stats(
            stat("State", esc(values["state"]), "state"),
            stat("Members", values["members"], "members"),
            stat("Total lag", values["lag"], "lag"),
            stat("Group epoch", values["epoch"], "epoch"),
            stat("Assignor", esc(info.assignor or "-")),
        )
        + chart("lag", "Total lag (records)", ("lag",), ctx.console.sampler.lag_history(group), "records")
        + f"<section><h2>Members</h2>{table(('Member', 'Instance', 'Epoch', 'Topics', 'Assigned', 'Revoking'), members, empty='no active members')}</section>"
        + "<section><h2>Committed offsets and lag</h2>"
        + table(("Topic", "Partition", "Committed", "Log end", "Lag", "Committed at", "Owner"), offsets,
                empty="nothing committed", attrs='id="offsets"')
        + "</section>"
        + _reset_form(ctx, info)
    )
    return ctx.page(f"Group {group}", body, sse=group_url(group, "/events"), current="/groups")


async def group_events(ctx: Context, group: str) -> Any:
    _info(ctx, group)

    def snapshot() -> dict[str, Any]:
        info = _info(ctx, group)
        total = sum(o.lag for o in info.offsets if o.error is None and o.lag > 0)
        last = ctx.console.sampler.lag_history(group)[-1:]
        point = [[last[0][0], total]] if last else []
        return {"values": _values(info), "charts": {"lag": point}}

    return ctx.console.live(snapshot)


async def reset(ctx: Context, group: str) -> Response:
    form = ctx.require_write("group", group)
    topic, spec, value = form.get("topic", "").strip(), form.get("spec", ""), form.get("value", "").strip()
    ctx.require_read("topic", topic)
    if spec not in RESET_SPECS:
        raise InvalidRequestError(f"reset to one of {', '.join(RESET_SPECS)}, not {spec[:40]!r}", field="spec")
    offset = timestamp_ms = 0
    if spec == "offset":
        if not value.isdigit():
            raise InvalidRequestError(f"offset must be a whole number, not {value[:40]!r}", field="value")
        offset = int(value)
    if spec == "timestamp":
        timestamp_ms = parse_time(value)
    ctx.broker.reset_offsets(group, topic, [], spec, offset, timestamp_ms)
    return ctx.redirect(group_url(group))


def register(console: Console) -> None:
    console.router.add("GET", "/groups", group_list)
    console.router.add("GET", "/events/groups", group_list_events)
    console.router.add("GET", "/groups/{group}", group_page)
    console.router.add("GET", "/groups/{group}/events", group_events)
    console.router.add("POST", "/groups/{group}/reset", reset)
