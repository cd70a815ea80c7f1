"""The broker's produce path: validate every batch of a request (all or nothing), check producer
sequences, append, and wait as ``acks`` says (fsync for ``flush=always``, the high watermark in a
cluster). A mixin of ``Broker``, which owns the state named below; split from ``broker.py`` so that
each file keeps to one concept.

Threading: event loop thread only, like the broker. ``_append_all`` has no await inside, so
nothing else appends to a request's partitions between its sequence check and its append.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from logstore.broker.backpressure import Backpressure
from logstore.broker.producer_state import PartitionProducerState
from logstore.broker.replication import Replication
from logstore.broker.transactions import TransactionCoordinator
from logstore.broker.types import Acks, ProduceItem, ProduceOutcome
from logstore.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    InvalidRequestError,
    LogstoreError,
)
from logstore.records import BatchHeader, validate_batches
from logstore.storage import DataDir, PartitionLog
from logstore.storage.config import FLUSH_ALWAYS

log = logging.getLogger(__name__)

Prepared = list[tuple[ProduceItem, PartitionLog, list[BatchHeader]]]


class ProducePath:
    """Provided by ``Broker``."""

    replication: Replication | None
    data_dir: DataDir
    clustered: bool
    transactions: TransactionCoordinator
    backpressure: Backpressure
    _loop: asyncio.AbstractEventLoop
    _executor: ThreadPoolExecutor

    def _check_open(self) -> None:
        raise NotImplementedError

    def producer_state(self, partition_log: PartitionLog) -> PartitionProducerState:
        raise NotImplementedError

    # -- produce ------------------------------------------------------------------------------------

    def _prepare(self, items: Sequence[ProduceItem]) -> Prepared:
        """Resolve and validate every partition's batches before anything is appended."""
        if not items:
            raise InvalidRequestError("a produce request needs at least one partition", field="partitions")
        prepared = []
        for item in items:
            partition_log = self.data_dir.log(item.topic, item.partition)
            if not item.records:
                raise CorruptBatchError(
                    f"{item.topic}/{item.partition}: no record batches in the payload",
                    position=0, topic=item.topic, partition=item.partition,
                )
            try:
                headers = validate_batches(item.records)
            except CorruptBatchError as exc:
                raise CorruptBatchError(
                    f"{item.topic}/{item.partition}: {exc.message}",
                    position=exc.position, topic=item.topic, partition=item.partition,
                ) from exc
            limit = partition_log.config.max_batch_bytes
            for header in headers:
                if header.record_count < 1:
                    raise CorruptBatchError(
                        f"{item.topic}/{item.partition}: batch at position {header.position} "
                        f"holds no records",
                        position=header.position, topic=item.topic, partition=item.partition,
                    )
                if header.is_control:
                    raise InvalidRequestError(
                        f"{item.topic}/{item.partition}: control batches are written by the broker only",
                        field="records", topic=item.topic, partition=item.partition,
                    )
                if header.is_transactional:
                    if header.producer_id < 0:
                        raise InvalidRequestError(
                            "a transactional batch needs a producer id", field="records",
                            topic=item.topic, partition=item.partition,
                        )
                    if not self.clustered:
                        # (a cluster: the coordinator is elsewhere; the partition's producer
                        # state fences older epochs, and the client added the partition to the
                        # transaction at the coordinator first: AddPartitionsToTxn)
                        self.transactions.check_produce(
                            header.producer_id, header.producer_epoch, item.topic, item.partition
                        )
                if header.batch_length > limit:
                    raise BatchTooLargeError(
                        f"batch of {header.batch_length} bytes exceeds max_batch_bytes={limit} "
                        f"of {item.topic}/{item.partition}",
                        size=header.batch_length, limit=limit,
                        topic=item.topic, partition=item.partition,
                    )
            prepared.append((item, partition_log, headers))
        return prepared

    async def produce(
        self, items: Sequence[ProduceItem], acks: Acks = Acks.ALL, client: str | None = None,
    ) -> list[ProduceOutcome]:
        """Validate every batch (all or nothing), append, and wait as ``acks`` says.

        Whole-request problems (unknown topic, corrupt batch, too large, no room under a
        backpressure budget) raise; a failure while appending to one partition (disk full) is
        that partition's ``error``. ``client`` names the connection for its byte budget.
        """
        self._check_open()
        prepared = self._prepare(items)
        if acks is Acks.NONE:
            self._loop.call_soon(self._append_quietly, prepared)
            return [ProduceOutcome(item.topic, item.partition) for item, _, _ in prepared]
        # Room under the backpressure budgets is taken before appending (slower acks), so a
        # request refused after backpressure_timeout_ms has appended nothing.
        size = sum(len(item.records) for item in items)
        unflushed: dict[tuple[str, int], int] = {}
        if acks is Acks.ALL:
            for item, partition_log, _ in prepared:
                if partition_log.config.flush == FLUSH_ALWAYS:
                    key = (item.topic, item.partition)
                    unflushed[key] = unflushed.get(key, 0) + len(item.records)
        waited = await self.backpressure.hold(client, size, unflushed)
        try:
            if waited:  # the loop ran meanwhile: transactions, topics may have changed
                self._check_open()
                prepared = self._prepare(items)
            outcomes, durable = self._append_all(prepared, acks is Acks.ALL)
            if durable:
                waits = [
                    self._loop.run_in_executor(self._executor, partition_log.wait_durable, end_offset)
                    for _, partition_log, end_offset in durable
                ]
                results = await asyncio.gather(*waits, return_exceptions=True)
                for (index, _, _), result in zip(durable, results, strict=True):
                    if isinstance(result, LogstoreError):
                        outcomes[index].error = result
                    elif isinstance(result, BaseException):
                        raise result
            if acks is Acks.ALL and self.replication is not None:
                await self._wait_replicated(outcomes)
        finally:
            self.backpressure.release(client, size, unflushed)
        return outcomes

    async def _wait_replicated(self, outcomes: list[ProduceOutcome]) -> None:
        """acks=all in a cluster: each appended partition's answer waits for its high watermark."""
        assert self.replication is not None
        pending = [o for o in outcomes if o.error is None and o.last_offset >= 0]
        results = await asyncio.gather(
            *(self.replication.wait_replicated(o.topic, o.partition, o.last_offset + 1) for o in pending),
            return_exceptions=True,
        )
        for outcome, result in zip(pending, results, strict=True):
            if isinstance(result, LogstoreError):
                outcome.error = result
            elif isinstance(result, BaseException):
                raise result

    def _append_quietly(self, prepared: Prepared) -> None:
        """acks=0: nobody hears about errors but the log."""
        try:
            self._append_all(prepared, False)
        except Exception:
            log.exception("acks=0 append failed")

    def _append_all(
        self, prepared: Prepared, want_durable: bool
    ) -> tuple[list[ProduceOutcome], list[tuple[int, PartitionLog, int]]]:
        """Check producer sequences, append, and update producer state — with no await in
        between, so nothing else can append to these partitions meanwhile."""
        outcomes: list[ProduceOutcome] = []
        durable: list[tuple[int, PartitionLog, int]] = []
        replication = self.replication
        for index, (item, partition_log, headers) in enumerate(prepared):
            idempotent = any(header.producer_id >= 0 for header in headers)
            try:
                leader_epoch = 0
                if replication is not None:
                    leader_epoch = replication.leader_epoch(item.topic, item.partition)
                    if want_durable:
                        replication.check_min_isr(item.topic, item.partition)
                if idempotent:
                    state = self.producer_state(partition_log)
                    original = state.check(headers)
                    if original is not None:
                        outcomes.append(
                            ProduceOutcome(
                                item.topic, item.partition, original[0], original[1],
                                partition_log.log_start_offset, duplicate=True,
                            )
                        )
                        if want_durable and partition_log.config.flush == FLUSH_ALWAYS:
                            durable.append((index, partition_log, original[1] + 1))
                        continue
                for header in headers:
                    if header.is_transactional and not self.clustered:
                        self.transactions.add_produced(header.producer_id, item.topic, item.partition)
                        break
                result = partition_log.append(
                    item.records, headers=headers, leader_epoch=leader_epoch, sync=False
                )
                if idempotent:
                    base = result.base_offset
                    for header in headers:
                        span = header.last_offset_delta + 1
                        state.update(header, base, base + span - 1)
                        base += span
            except LogstoreError as exc:
                log.warning("append to %s/%s failed: %s", item.topic, item.partition, exc)
                outcomes.append(ProduceOutcome(item.topic, item.partition, error=exc))
                continue
            outcomes.append(
                ProduceOutcome(
                    item.topic, item.partition, result.base_offset, result.last_offset,
                    partition_log.log_start_offset,
                )
            )
            if want_durable and partition_log.config.flush == FLUSH_ALWAYS:
                durable.append((index, partition_log, result.log_end_offset))
        return outcomes, durable
