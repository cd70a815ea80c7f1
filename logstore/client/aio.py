"""asyncio twins of the clients: ``AsyncProducer``, ``AsyncConsumer``, ``AsyncAdmin``.

They wrap the synchronous clients rather than re-implement them: the producer's ``send`` never
blocks the event loop (it only appends to a batch; the sender thread does the I/O) and returns an
awaitable future; blocking calls (``flush``, ``poll``, admin calls, seeks) run in a worker thread
with ``asyncio.to_thread``. One consumer must not be polled by two tasks at once, as with the
synchronous one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from logstore.client.admin import Admin
from logstore.client.batch import RecordFuture
from logstore.client.consumer import Consumer
from logstore.client.models import (
    BatchMetadata,
    ConsumerRecord,
    GroupMetadata,
    RecordMetadata,
    TopicPartition,
)
from logstore.client.producer import Producer
from logstore.records import RecordColumns

T = TypeVar("T")


def record_result(future: RecordFuture) -> Awaitable[RecordMetadata]:
    """An asyncio future resolved (on the running loop) when ``future`` is."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[RecordMetadata] = loop.create_future()

    def done(resolved: RecordFuture) -> None:
        loop.call_soon_threadsafe(_copy, resolved, result)

    future.add_done_callback(done)
    return result


def _copy(source: RecordFuture, target: asyncio.Future[RecordMetadata]) -> None:
    if target.cancelled():
        return
    error = source.exception(0)
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result(0))


class _Wrapper:
    _sync: Any

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(function, *args, **kwargs))

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncProducer(_Wrapper):
    """``Producer`` for asyncio: ``await producer.send(...)`` gives ``RecordMetadata``."""

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self._sync = Producer(server, **options)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: Any = None, partition: int | None = None,
             timestamp: int | None = None) -> Awaitable[RecordMetadata]:
        """Queue a record now; await the result only if you need it."""
        return record_result(self._sync.send(topic, value, key, headers, partition, timestamp))

    def send_batch(self, topic: str, values: Any, keys: Any = None,
                   partition: int | None = None, timestamps: Any = None,
                   headers: Any = None) -> Awaitable[list[BatchMetadata]]:
        future: Future[list[BatchMetadata]] = self._sync.send_batch(
            topic, values, keys, partition, timestamps, headers
        )
        return asyncio.wrap_future(future)

    async def send_arrow(self, topic: str, table: Any, **columns: Any) -> list[BatchMetadata]:
        """As ``Producer.send_arrow``; the rows are encoded in a worker thread."""
        future = await self._run(self._sync.send_arrow, topic, table, **columns)
        return await asyncio.wrap_future(future)

    async def flush(self, timeout: float | None = None) -> None:
        await self._run(self._sync.flush, timeout)

    async def init_transactions(self) -> None:
        await self._run(self._sync.init_transactions)

    def begin_transaction(self) -> None:
        self._sync.begin_transaction()

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int],
                                          group: GroupMetadata | str) -> None:
        await self._run(self._sync.send_offsets_to_transaction, offsets, group)

    async def commit_transaction(self, timeout: float | None = None) -> None:
        await self._run(self._sync.commit_transaction, timeout)

    async def abort_transaction(self, timeout: float | None = None) -> None:
        await self._run(self._sync.abort_transaction, timeout)


class AsyncConsumer(_Wrapper):
    """``Consumer`` for asyncio; iterate with ``async for``."""

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self._sync = Consumer(server, **options)

    async def assign(self, partitions: Any) -> None:
        await self._run(self._sync.assign, partitions)

    def assignment(self) -> list[TopicPartition]:
        return self._sync.assignment()

    async def subscribe(self, topics: Any, on_assign: Any = None, on_revoke: Any = None,
                        on_lost: Any = None) -> None:
        """As ``Consumer.subscribe``; the callbacks run in the worker thread that polls."""
        await self._run(self._sync.subscribe, topics, on_assign, on_revoke, on_lost)

    async def commit(self, offsets: dict[TopicPartition, int] | None = None
                     ) -> dict[TopicPartition, int]:
        result = await self._run(self._sync.commit, offsets)
        assert isinstance(result, dict)
        return result

    async def committed(self, partitions: Any = ()) -> dict[TopicPartition, int | None]:
        return await self._run(self._sync.committed, partitions)

    def position_offsets(self) -> dict[TopicPartition, int]:
        return self._sync.position_offsets()

    def group_metadata(self) -> GroupMetadata:
        return self._sync.group_metadata()

    async def seek(self, partition: Any, offset: int) -> None:
        self._sync.seek(partition, offset)

    async def seek_to_beginning(self, *partitions: Any) -> None:
        await self._run(self._sync.seek_to_beginning, *partitions)

    async def seek_to_end(self, *partitions: Any) -> None:
        await self._run(self._sync.seek_to_end, *partitions)

    async def seek_to_timestamp(self, timestamp: Any, *partitions: Any) -> None:
        await self._run(self._sync.seek_to_timestamp, timestamp, *partitions)

    async def position(self, partition: Any) -> int:
        return await self._run(self._sync.position, partition)

    async def poll(self, max_records: int | None = None,
                   timeout: float | None = 1.0) -> list[ConsumerRecord]:
        return await self._run(self._sync.poll, max_records, timeout)

    async def poll_columns(self, timeout: float | None = 1.0) -> dict[TopicPartition, RecordColumns]:
        return await self._run(self._sync.poll_columns, timeout)

    async def read_arrow(self, topic: str, *args: Any, **options: Any) -> Any:
        """As ``Consumer.read_arrow``, in a worker thread (likewise the two below)."""
        return await self._run(self._sync.read_arrow, topic, *args, **options)

    async def read_pandas(self, topic: str, *args: Any, **options: Any) -> Any:
        return await self._run(self._sync.read_pandas, topic, *args, **options)

    async def read_polars(self, topic: str, *args: Any, **options: Any) -> Any:
        return await self._run(self._sync.read_polars, topic, *args, **options)

    async def iter_arrow(self, topic: str, *args: Any, **options: Any) -> AsyncIterator[Any]:
        """As ``Consumer.iter_arrow``: each batch is taken in a worker thread."""
        batches = await self._run(self._sync.iter_arrow, topic, *args, **options)
        done = object()
        while (batch := await self._run(next, batches, done)) is not done:
            yield batch

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        while True:
            for record in await self.poll(timeout=1.0):
                yield record


class AsyncAdmin(_Wrapper):
    """``Admin`` for asyncio: every method is a coroutine with the same arguments."""

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self._sync = Admin(server, **options)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._sync, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._run(method, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call
