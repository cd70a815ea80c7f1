"""Helpers of the share-group broker tests: records acquired by a member as (offset, value,
delivery count), acknowledgement shorthands."""

from __future__ import annotations

from typing import Any

import numpy as np

from logstore.broker import Broker
from logstore.broker.share import AckKind, AckRange, AcquiredPartition
from logstore.records import decode_columns


def taken(outcomes: list[AcquiredPartition]) -> list[tuple[str, int, int, bytes, int]]:
    """(topic, partition, offset, value, delivery count) of every acquired record, as a client
    decodes them: the batches' records filtered to the acquired ranges."""
    result = []
    for out in outcomes:
        columns = decode_columns(b"".join(bytes(r) for r in out.records))
        offsets, index = np.unique(columns.offsets, return_index=True)
        for first, last, count in zip(out.first_offsets, out.last_offsets, out.delivery_counts, strict=True):
            for position in np.flatnonzero((offsets >= first) & (offsets <= last)):
                value = columns.value(int(index[position]))
                result.append((out.topic, out.partition, int(offsets[position]), bytes(value or b""), int(count)))
    return sorted(result)


async def fetch(broker: Broker, member: str, topic: str = "tasks", group: str = "g", **options: Any):  # type: ignore[no-untyped-def]
    results, outcomes = await broker.share_fetch(group, member, [topic], **options)
    return taken(outcomes)


def ack(topic: str, partition: int, first: int, last: int | None = None, kind: AckKind = AckKind.ACCEPT,
        **options: Any) -> AckRange:
    return AckRange(topic, partition, first, first if last is None else last, kind, **options)
