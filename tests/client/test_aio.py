"""The asyncio twins: the same round trip with await."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from logstore import AsyncAdmin, AsyncConsumer, AsyncProducer
from logstore.client import RecordMetadata, TopicInfo, TopicPartition
from logstore.errors import BatchTooLargeError


def test_async_round_trip(server: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(1)

    async def main() -> list[bytes | None]:
        async with AsyncAdmin(server) as admin:
            assert TopicInfo(topic, 1, False) in await admin.list_topics()
        async with AsyncProducer(server) as producer:
            assert await producer.send(topic, b"a") == RecordMetadata(0, 0)
            batches = await producer.send_batch(topic, [b"b", b"c"], partition=0)
            assert [(b.base_offset, b.last_offset) for b in batches] == [(1, 2)]
            await producer.flush()
        async with AsyncConsumer(server, auto_offset_reset="earliest",
                                 fetch_max_wait_ms=100) as consumer:
            await consumer.assign(topic)
            values: list[bytes | None] = []
            async for record in consumer:
                values.append(record.value)
                if len(values) == 3:
                    break
            assert await consumer.position((topic, 0)) == 3
            return values

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [b"a", b"b", b"c"]


def test_awaiting_a_failed_send_raises(server: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(1, max_batch_bytes=1024)

    async def main() -> None:
        async with AsyncProducer(server) as producer:
            with pytest.raises(BatchTooLargeError):
                await producer.send(topic, b"x" * 4000)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_async_consume_transform_produce_in_a_transaction(server: str,
                                                          new_topic: Callable[..., str]) -> None:
    source, sink = new_topic(1), new_topic(1)

    async def main() -> dict[TopicPartition, int | None]:
        async with AsyncProducer(server) as plain:
            await plain.send_batch(source, [b"a", b"b"], partition=0)
        async with AsyncProducer(server, transactional_id=f"aio-{sink}") as producer, \
                AsyncConsumer(server, group_id=f"aio-{source}", enable_auto_commit=False,
                              auto_offset_reset="earliest") as consumer:
            await producer.init_transactions()
            await consumer.subscribe([source])
            records = []
            while len(records) < 2:
                records += await consumer.poll(timeout=0.5)
            producer.begin_transaction()
            for record in records:
                producer.send(sink, record.value.upper())
            await producer.send_offsets_to_transaction(consumer.position_offsets(),
                                                       consumer.group_metadata())
            await producer.commit_transaction()
            return await consumer.committed()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == {TopicPartition(source, 0): 2}
