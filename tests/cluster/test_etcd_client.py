"""EtcdClient against real etcd members (tests/cluster/etcd_fixture.py), one behaviour each."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from logstore.cluster.etcd import (
    Compare,
    EtcdClient,
    EtcdCompactedError,
    EtcdUnavailableError,
    EventType,
    Op,
    WatchEvent,
)
from tests.cluster.etcd_fixture import EtcdCluster

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


async def wait_until(condition: Any, timeout_s: float, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s"
        await asyncio.sleep(step_s)


def test_put_get_and_get_prefix(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            await client.put("/p/b", b"2")
            await client.put("/p/a", "1")
            last = await client.put("/q/a", b"other")
            kv = await client.get("/p/a")
            assert kv is not None and (kv.key, kv.value, kv.version, kv.lease) == (b"/p/a", b"1", 1, 0)
            assert await client.get("/p/missing") is None
            kvs, revision = await client.get_prefix("/p/")
            assert [(item.key, item.value) for item in kvs] == [(b"/p/a", b"1"), (b"/p/b", b"2")]
            assert revision == last
            assert await client.delete("/p/a") == 1 and await client.delete("/p/a") == 0
            assert await client.delete_prefix("/p/") == 1
            assert (await client.get_prefix("/p/"))[0] == []
            assert await client.get("/q/a") is not None

    run(main())


def test_txn_runs_success_ops_when_compares_hold_else_failure_ops(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            create = ([Compare.create_revision("/t") == 0], [Op.put("/t", "first")], [Op.get("/t")])
            won = await client.txn(*create)
            assert won.succeeded and won.responses[0].kind == "put"
            lost = await client.txn(*create)
            assert not lost.succeeded and lost.revision == won.revision
            assert [kv.value for kv in lost.responses[0].kvs] == [b"first"]
            guarded = await client.txn([Compare.value("/t") == "first", Compare.version("/t") > 0],
                                       [Op.put("/t", "second"), Op.delete("/other", prefix=True)])
            assert guarded.succeeded and guarded.responses[1].deleted == 0
            assert (await client.get("/t")).value == b"second"  # type: ignore[union-attr]

    run(main())


def test_lease_expiry_deletes_its_keys_and_keep_alive_reports_it_lost(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            lease_id = await client.grant(1)
            await client.put("/brokers/1", "addr", lease_id)
            await wait_until(lambda: _absent(client, "/brokers/1"), timeout_s=5)
            lost: list[bool] = []
            keepalive = client.keep_alive(lease_id, 1, lambda: lost.append(True))
            await wait_until(lambda: _true(lost), timeout_s=3)
            await asyncio.sleep(0.3)
            assert lost == [True] and keepalive.lost and not keepalive.running
            assert keepalive.confirmed_lost and "expired" in (keepalive.lost_reason or "")

    run(main())


def test_keep_alive_calls_on_lost_when_no_renewal_is_answered_in_time(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints, timeout_s=1.0) as client:
            lease_id = await client.grant(1)
            lost_at: list[float] = []
            keepalive = client.keep_alive(lease_id, 1, lambda: lost_at.append(time.monotonic()))
            await wait_until(lambda: _true([keepalive.renewals]), timeout_s=2)
            etcd.members[0].pause()
            paused_at = time.monotonic()
            try:
                await wait_until(lambda: _true(lost_at), timeout_s=3)
            finally:
                etcd.members[0].resume()
            assert lost_at[0] - paused_at <= 1.5  # within the TTL of the last answered renewal
            assert not keepalive.confirmed_lost and "no renewal" in (keepalive.lost_reason or "")

    run(main())


def test_keep_alive_keeps_a_key_past_its_ttl(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            lease_id = await client.grant(1)
            await client.put("/brokers/2", "addr", lease_id)
            lost: list[bool] = []
            keepalive = client.keep_alive(lease_id, 1, lambda: lost.append(True))
            await asyncio.sleep(2.5)
            assert await client.get("/brokers/2") is not None
            assert not lost and keepalive.renewals >= 5 and 0 < keepalive.remaining_s() <= 1
            await keepalive.stop()
            await wait_until(lambda: _absent(client, "/brokers/2"), timeout_s=4)
            assert not lost

    run(main())


def test_keep_alive_survives_killing_the_member_it_renews_through(etcd3: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd3.endpoints, timeout_s=3) as client:
            lease_id = await client.grant(2)
            await client.put("/brokers/3", "addr", lease_id)
            lost: list[bool] = []
            keepalive = client.keep_alive(lease_id, 2, lambda: lost.append(True))
            await wait_until(lambda: _true([keepalive.renewals]), timeout_s=2)
            renewed = keepalive.renewals
            etcd3.members[[m.address for m in etcd3.members].index(client.current_endpoint)].kill()
            await asyncio.sleep(3.0)
            assert not lost and keepalive.renewals > renewed
            assert await client.get("/brokers/3") is not None

    run(main(), timeout_s=30)


def test_campaign_elects_one_leader_and_a_new_one_with_a_larger_epoch(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            lease_a, lease_b = await client.grant(5), await client.grant(5)
            epoch_a = await client.campaign("/controller", "a", lease_a)
            assert epoch_a is not None
            assert await client.campaign("/controller", "a", lease_a) == epoch_a  # a lost answer
            assert await client.campaign("/controller", "b", lease_b) is None
            leader = await client.leader("/controller")
            assert leader is not None and (leader.value, leader.lease) == (b"a", lease_a)
            assert leader.create_revision == epoch_a
            await client.revoke(lease_a)
            epoch_b = await client.campaign("/controller", "b", lease_b)
            assert epoch_b is not None and epoch_b > epoch_a
            assert (await client.leader("/controller")).value == b"b"  # type: ignore[union-attr]

    run(main())


def test_a_write_guarded_by_a_stale_epoch_fails(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            lease_a, lease_b = await client.grant(5), await client.grant(5)
            stale = await client.campaign("/controller", "a", lease_a)
            await client.revoke(lease_a)
            current = await client.campaign("/controller", "b", lease_b)
            assert stale is not None and current is not None
            deposed = await client.txn([Compare.create_revision("/controller") == stale],
                                       [Op.put("/topics/t", "from a")])
            assert not deposed.succeeded and await client.get("/topics/t") is None
            assert not await client.resign("/controller", stale)
            leading = await client.txn([Compare.create_revision("/controller") == current],
                                       [Op.put("/topics/t", "from b")])
            assert leading.succeeded and (await client.get("/topics/t")).value == b"from b"  # type: ignore[union-attr]
            assert await client.resign("/controller", current)
            assert await client.leader("/controller") is None

    run(main())


def test_watch_sees_puts_and_deletes_in_order(etcd: EtcdCluster) -> None:
    async def main() -> list[WatchEvent]:
        async with EtcdClient(etcd.endpoints) as client:
            await client.put("/w/before", "x")
            _, revision = await client.get_prefix("/w/")
            async with client.watch_prefix("/w/", revision + 1) as watch:
                await client.put("/w/a", "1")
                await client.put("/elsewhere", "ignored")
                await client.put("/w/a", "2")
                await client.delete("/w/before")
                return [event async for event in _take(watch, 3)]

    events = run(main())
    assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
        (EventType.PUT, b"/w/a", b"1"), (EventType.PUT, b"/w/a", b"2"),
        (EventType.DELETE, b"/w/before", b""),
    ]
    assert [e.revision for e in events] == sorted({e.revision for e in events})


def test_watch_from_a_compacted_revision_raises_compacted(etcd: EtcdCluster) -> None:
    async def main() -> EtcdCompactedError:
        async with EtcdClient(etcd.endpoints) as client:
            first = await client.put("/c/k", "1")
            last = await client.put("/c/k", "2")
            subprocess.run(["etcdctl", "--endpoints", etcd.endpoints, "compact", str(last)],
                           check=True, capture_output=True, timeout=10)
            with pytest.raises(EtcdCompactedError) as caught:
                async with client.watch_prefix("/c/", first) as watch:
                    await watch.__anext__()
            return caught.value

    error = run(main())
    assert error.compact_revision >= error.start_revision


def test_watch_survives_killing_the_member_it_is_connected_to(etcd3: EtcdCluster) -> None:
    async def main() -> tuple[list[WatchEvent], int]:
        async with EtcdClient(etcd3.endpoints, timeout_s=5) as client:
            _, revision = await client.get_prefix("/k/")
            async with client.watch_prefix("/k/", revision + 1) as watch:
                await client.put("/k/0", "0")
                events = [event async for event in _take(watch, 1)]
                connected = [m.address for m in etcd3.members].index(watch.endpoint)
                etcd3.members[connected].kill()
                for index in range(1, 6):
                    await client.put(f"/k/{index}", str(index))
                events += [event async for event in _take(watch, 5)]
                return events, watch.reconnects

    events, reconnects = run(main(), timeout_s=30)
    assert [e.kv.key for e in events] == [f"/k/{i}".encode() for i in range(6)]
    assert reconnects >= 1


def test_unary_calls_fail_over_when_one_member_is_down(etcd3: EtcdCluster) -> None:
    etcd3.members[0].kill()

    async def main() -> None:
        async with EtcdClient(etcd3.endpoints, timeout_s=5) as client:
            assert client.current_endpoint == etcd3.members[0].address
            await client.put("/f", "v")
            assert (await client.get("/f")).value == b"v"  # type: ignore[union-attr]
            assert client.current_endpoint != etcd3.members[0].address
            leader = etcd3.members[etcd3.leader_index()].address
            assert (await client.status(leader)).is_leader

    run(main())


def test_quorum_loss_raises_unavailable_within_the_timeout_and_recovers(etcd3: EtcdCluster) -> None:
    leader = etcd3.leader_index()
    stopped = [leader, (leader + 1) % 3]
    for index in stopped:
        etcd3.members[index].kill()

    async def main() -> float:
        async with EtcdClient(etcd3.endpoints, timeout_s=2.0) as client:
            started = time.monotonic()
            with pytest.raises(EtcdUnavailableError) as caught:
                await client.put("/q", "v")
            elapsed_s = time.monotonic() - started
            assert caught.value.endpoints == etcd3.endpoints and caught.value.reason == "ETCD_UNAVAILABLE"
            for index in stopped:
                etcd3.members[index].start()
            await asyncio.to_thread(etcd3.wait_healthy)
            await client.put("/q", "v", timeout_s=5)
            assert (await client.get("/q")).value == b"v"  # type: ignore[union-attr]
            return elapsed_s

    assert run(main(), timeout_s=30) <= 3.0


async def _absent(client: EtcdClient, key: str) -> bool:
    return await client.get(key) is None


async def _true(items: list[Any]) -> bool:
    return bool(items and items[0])


async def _take(watch: Any, count: int) -> Any:
    for _ in range(count):
        yield await watch.__anext__()
