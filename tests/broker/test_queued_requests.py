"""The broker-wide cap on produce request bytes read and not yet answered
(logstore/broker/backpressure.py: QueuedRequests, ``max_queued_request_bytes``)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from logstore.broker.backpressure import QueuedRequests
from logstore.errors import LimitExceededError

MIB = 1 << 20


def test_a_call_reserves_the_largest_request_then_keeps_its_real_size() -> None:
    async def scenario() -> None:
        queued = QueuedRequests(8 * MIB, 4 * MIB, timeout_s=1.0, waits=Counter())
        first = await queued.reserve()
        second = await queued.reserve()
        assert (first, second, queued.used) == (4 * MIB, 4 * MIB, 8 * MIB)
        third = asyncio.ensure_future(queued.reserve())  # no room: its request is not read
        await asyncio.sleep(0.01)
        assert not third.done()
        queued.resize(first, 1 * MIB)  # the requests read were 1 MiB each: room for the third
        queued.resize(second, 1 * MIB)
        assert await asyncio.wait_for(third, 1) == 4 * MIB
        assert queued.used == 1 * MIB + 1 * MIB + 4 * MIB
    asyncio.run(scenario())


def test_a_call_that_finds_no_room_in_time_is_refused_naming_the_limit() -> None:
    async def scenario() -> None:
        waits: Counter[str] = Counter()
        queued = QueuedRequests(4 * MIB, 4 * MIB, timeout_s=0.05, waits=waits)
        await queued.reserve()
        with pytest.raises(LimitExceededError) as caught:
            await queued.reserve()
        assert caught.value.fields["limit_name"] == "max_queued_request_bytes"
        assert queued.used == 4 * MIB  # the refused call holds nothing
    asyncio.run(scenario())


def test_a_stream_reads_only_below_the_cap_and_counts_what_it_read() -> None:
    async def scenario() -> None:
        waits: Counter[str] = Counter()
        queued = QueuedRequests(2 * MIB, 4 * MIB, timeout_s=1.0, waits=waits)
        await queued.wait_below()  # empty: at once
        held = queued.take(3 * MIB)  # one request may pass the cap
        blocked = asyncio.ensure_future(queued.wait_below())
        await asyncio.sleep(0.01)
        assert not blocked.done()
        queued.release(held)
        await asyncio.wait_for(blocked, 1)
        assert waits["max_queued_request_bytes"] == 1
    asyncio.run(scenario())


def test_a_release_with_nobody_waiting_schedules_nothing() -> None:
    async def scenario() -> None:
        queued = QueuedRequests(2 * MIB, 4 * MIB, timeout_s=1.0, waits=Counter())
        held = queued.take(1 * MIB)
        tasks = len(asyncio.all_tasks())
        queued.release(held)  # every answered request does this: no task, no extra loop turn
        assert len(asyncio.all_tasks()) == tasks and queued.used == 0
    asyncio.run(scenario())
