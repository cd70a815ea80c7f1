"""Long-poll wake-ups (``broker/wakeups.py``): a woken waiter resumes at the loop's next turn."""

from __future__ import annotations

import asyncio
import time

from logstore.broker.wakeups import Wakeups, wait
from logstore.storage import DataDir

from .helpers import run

KEY = ("t", 0)


def test_a_woken_waiter_resumes_at_the_next_turn_of_the_loop() -> None:
    async def body() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        future = wakeups.register([KEY])
        waiter = asyncio.ensure_future(wait(future, 10.0))
        await asyncio.sleep(0)  # the waiter is parked on its future
        wakeups.wake([KEY])
        await asyncio.sleep(0)  # one turn: no shield or wait_for callbacks in between
        assert waiter.done() and waiter.result() is True
        wakeups.unregister([KEY], future)
        assert wakeups.waiting == 0

    run(body())


def test_a_waiter_nobody_wakes_returns_false_after_its_timeout() -> None:
    async def body() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        future = wakeups.register([KEY])
        started = time.monotonic()
        assert await wait(future, 0.02) is False
        assert 0.015 <= time.monotonic() - started < 1.0
        wakeups.unregister([KEY], future)
        wakeups.wake([KEY])  # nobody left: nothing happens
        assert wakeups.waiting == 0

    run(body())


def test_a_waiter_already_woken_returns_at_once() -> None:
    async def body() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())
        future = wakeups.register([KEY, ("t", 1)])
        wakeups.wake([("t", 1)])
        assert await wait(future, 10.0) is True
        assert await wait(wakeups.register([KEY]), 0) is False  # no time to wait: not woken

    run(body())


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def body() -> None:
        wakeups = Wakeups(asyncio.get_running_loop())

        async def long_poll() -> bool:
            future = wakeups.register([KEY])
            try:
                return await wait(future, 10.0)
            finally:
                wakeups.unregister([KEY], future)

        waiter = asyncio.ensure_future(long_poll())
        await asyncio.sleep(0)
        assert wakeups.waiting == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled() and wakeups.waiting == 0
        wakeups.wake([KEY])

    run(body())


def test_an_append_on_another_thread_wakes_the_waiter(data_dir: DataDir) -> None:
    data_dir.create_topic("t", 1)
    partition_log = data_dir.log("t", 0)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        wakeups = Wakeups(loop)
        future = wakeups.register([KEY])
        # the listener, called off the loop's thread, hops onto it (call_soon_threadsafe)
        await loop.run_in_executor(None, wakeups.on_append, partition_log)
        assert await wait(future, 5.0) is True

    run(body())
