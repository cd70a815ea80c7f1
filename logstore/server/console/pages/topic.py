"""A topic's page (``/topics/<name>``): partitions, config, live throughput; and its write
actions: produce a test record, delete the topic (both need admin rights on the topic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from logstore.broker.types import Acks, ProduceItem
from logstore.errors import InvalidRequestError
from logstore.records import encode_batch
from logstore.server.console.http import Response
from logstore.server.console.pages.overview import (
    rate_stats,
    rate_values,
    throughput_chart,
    topic_url,
)
from logstore.server.console.render import attr, count, esc, row, size, stat, stats, table
from logstore.server.console.routes import Context
from logstore.storage import LogConfig, TopicDescription

if TYPE_CHECKING:
    from logstore.server.console.app import Console

#: A test record typed into the form may not exceed this.
MAX_TEST_RECORD_BYTES = 64 << 10


def parse_partitions(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise InvalidRequestError(f"partitions must be a whole number of at least 1, not {text[:40]!r}", field="partitions")
    return int(text)


def parse_config(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines ignored) -> a config dict the broker validates."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"config line {line[:60]!r} is not key=value", field="config")
        config[key.strip()] = value.strip()
    return config


def _describe(ctx: Context, name: str) -> TopicDescription:
    ctx.require_read("topic", name)
    return ctx.broker.describe_topic(name)


def _values(ctx: Context, description: TopicDescription) -> dict[str, Any]:
    values: dict[str, Any] = {
        "records": count(sum(p.log_end_offset - p.log_start_offset for p in description.partitions)),
        "size": size(description.size_bytes),
        "segments": count(sum(p.segments for p in description.partitions)),
        **rate_values(ctx.console.sampler.rates(description.name)),
    }
    for p in description.partitions:
        values[f"p{p.partition}.start"] = count(p.log_start_offset)
        values[f"p{p.partition}.end"] = count(p.log_end_offset)
        values[f"p{p.partition}.records"] = count(p.log_end_offset - p.log_start_offset)
        values[f"p{p.partition}.size"] = size(p.size_bytes)
        values[f"p{p.partition}.segments"] = count(p.segments)
    return values


def _config_table(config: LogConfig) -> str:
    overrides = config.overrides()
    rows = [
        row(f"<code>{esc(key)}</code>", esc(value), "set" if key in overrides else "default")
        for key, value in config.to_dict().items()
    ]
    return table(("Key", "Value", "Source"), rows)


def _actions(ctx: Context, description: TopicDescription) -> str:
    if not ctx.can_write("topic", description.name):
        return ""
    name = description.name
    options = "".join(f'<option value="{p.partition}">{p.partition}</option>' for p in description.partitions)
    return (
        '<section class="card"><h2>Produce a test record</h2>'
        f'<form method="post" action={attr(topic_url(name, "/produce"))} class="grid">{ctx.csrf_field()}'
        f'<label for="tp">Partition</label><select id="tp" name="partition">{options}</select>'
        '<label for="tk">Key</label><input id="tk" name="key">'
        '<label for="tv">Value</label><textarea id="tv" name="value" rows="3" required></textarea>'
        '<button type="submit">Produce</button></form></section>'
        '<section class="card danger"><h2>Delete this topic</h2>'
        f'<form method="post" action={attr(topic_url(name, "/delete"))} class="grid">{ctx.csrf_field()}'
        '<label for="confirm">Type the topic name to confirm</label><input id="confirm" name="confirm" required>'
        '<button type="submit" class="danger">Delete topic</button></form></section>'
    )


async def topic_page(ctx: Context, topic: str) -> Response:
    description = _describe(ctx, topic)
    values = _values(ctx, description)
    placement = ctx.console.placement_view or (lambda topic, partition: ("this broker", "this broker"))
    partitions = [
        row(
            str(p.partition), values[f"p{p.partition}.start"], values[f"p{p.partition}.end"],
            values[f"p{p.partition}.records"], values[f"p{p.partition}.size"], values[f"p{p.partition}.segments"],
            *(esc(text) for text in placement(topic, p.partition)),
            f"<a href={attr(topic_url(topic, f'/messages?partition={p.partition}'))}>browse</a>",
            live=(None, f"p{p.partition}.start", f"p{p.partition}.end", f"p{p.partition}.records",
                  f"p{p.partition}.size", f"p{p.partition}.segments"),
        )
        for p in description.partitions
    ]
    body = (
        stats(
            stat("Partitions", count(len(description.partitions))),
            stat("Records", values["records"], "records"),
            stat("Size", values["size"], "size"),
            stat("Segments", values["segments"], "segments"),
            *rate_stats(values),
        )
        + f'<p><a class="button" href={attr(topic_url(topic, "/messages"))}>Browse messages</a></p>'
        + throughput_chart(ctx, topic)
        + "<section><h2>Partitions</h2>"
        + table(
            ("Partition", "Log start", "Log end", "Records", "Size", "Segments", "Leader", "ISR", ""),
            partitions, attrs='id="partitions"',
        )
        + "</section>"
        + f"<section><h2>Config</h2>{_config_table(description.config)}</section>"
        + _actions(ctx, description)
    )
    return ctx.page(f"Topic {topic}", body, sse=topic_url(topic, "/events"), current="/topics")


async def topic_events(ctx: Context, topic: str) -> Any:
    _describe(ctx, topic)

    def snapshot() -> dict[str, Any]:
        description = ctx.broker.describe_topic(topic)
        history = ctx.console.sampler.rate_history(topic)
        return {"values": _values(ctx, description), "charts": {"throughput": history[-1:]}}

    return ctx.console.live(snapshot)


async def produce(ctx: Context, topic: str) -> Response:
    form = ctx.require_write("topic", topic)
    description = ctx.broker.describe_topic(topic)
    text = form.get("partition", "0").strip()
    if not text.isdigit() or int(text) >= len(description.partitions):
        raise InvalidRequestError(
            f"partition must be between 0 and {len(description.partitions) - 1}, not {text[:40]!r}", field="partition"
        )
    value = form.get("value", "").encode()
    key = form.get("key", "").encode() or None
    if len(value) + len(key or b"") > MAX_TEST_RECORD_BYTES:
        raise InvalidRequestError(f"a test record may hold at most {MAX_TEST_RECORD_BYTES} bytes", field="value")
    batch = encode_batch([value], keys=[key])
    (outcome,) = await ctx.broker.produce([ProduceItem(topic, int(text), batch)], Acks.ALL)
    if outcome.error is not None:
        raise outcome.error
    ctx.console.metrics.produced(topic, 1, len(batch))
    return ctx.redirect(topic_url(topic, f"/messages?partition={text}&from=offset&offset={outcome.base_offset}"))


async def delete(ctx: Context, topic: str) -> Response:
    form = ctx.require_write("topic", topic)
    if form.get("confirm", "") != topic:
        raise InvalidRequestError("type the topic's name to confirm its deletion", field="confirm")
    ctx.broker.delete_topic(topic)
    ctx.console.metrics.forget_topic(topic)
    return ctx.redirect("/topics")


def register(console: Console) -> None:
    console.router.add("GET", "/topics/{topic}", topic_page)
    console.router.add("GET", "/topics/{topic}/events", topic_events)
    console.router.add("POST", "/topics/{topic}/produce", produce)
    console.router.add("POST", "/topics/{topic}/delete", delete)
