"""The asyncio twins of the table methods: the same tables with await."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pyarrow as pa

from logstore import AsyncConsumer, AsyncProducer


def test_async_send_arrow_read_arrow_and_iter_arrow(server: str,
                                                    new_topic: Callable[..., str]) -> None:
    topic = new_topic(1)
    table = pa.table({"v": [b"a", b"b", b"c"]})

    async def main() -> None:
        async with AsyncProducer(server) as producer:
            metadata = await producer.send_arrow(topic, table, value="v", partition=0)
            assert [(m.base_offset, m.last_offset) for m in metadata] == [(0, 2)]
        async with AsyncConsumer(server) as consumer:
            read = await consumer.read_arrow(topic, columns=["offset", "value"])
            assert read.to_pydict() == {"offset": [0, 1, 2], "value": [b"a", b"b", b"c"]}
            batches = [batch async for batch in consumer.iter_arrow(topic, start=1)]
            assert pa.Table.from_batches(batches).column("value").to_pylist() == [b"b", b"c"]
            frame = await consumer.read_pandas(topic, columns=["value"])
            assert list(frame["value"]) == [b"a", b"b", b"c"]
            assert (await consumer.read_polars(topic, columns=["offset"])).height == 3

    asyncio.run(main())
