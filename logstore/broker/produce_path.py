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

from logstore.broker.append_writer import AppendWriter
from logstore.broker.backpressure import Backpressure
from logstore.broker.config import BrokerConfig
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
from logstore.storage import AppendResult, DataDir, PartitionLog
from logstore.storage.config import FLUSH_ALWAYS

log = logging.getLogger(__name__)

Prepared = list[tuple[ProduceItem, PartitionLog, list[BatchHeader]]]
#: (index in the request, its log, the offset that must be durable before the answer)
Durable = list[tuple[int, PartitionLog, int]]
Appended = tuple[list[ProduceOutcome], Durable]


class ProducePath:
    """Provided by ``Broker``."""

    config: BrokerConfig
    replication: Replication | None
    data_dir: DataDir
    clustered: bool
    transactions: TransactionCoordinator
    backpressure: Backpressure
    _loop: asyncio.AbstractEventLoop
    _executor: ThreadPoolExecutor
    _append_writer: AppendWriter

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
            while True:  # and no partition of the request has an append on the writer thread
                if waited:  # the loop ran meanwhile: transactions, topics may have changed
                    self._check_open()
                    prepared = self._prepare(items)
                waited = await self._append_writer.wait_free(pl for _, pl, _ in prepared)
                if not waited:
                    break
            outcomes, durable = await self._append(prepared, acks is Acks.ALL)
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
        """acks=0: nobody hears about errors but the log. A partition with an append on the
        writer thread is waited for (its producer state is not updated yet)."""
        busy = self._append_writer.busy(partition_log for _, partition_log, _ in prepared)
        if busy is not None:
            busy.add_done_callback(lambda _: self._append_quietly(prepared))
            return
        try:
            self._append_all(prepared, False)
        except Exception:
            log.exception("acks=0 append failed")

    def _write_off_loop(self, prepared: Prepared) -> bool:
        """Whether this request's appends go to the writer thread (``write_off_loop_bytes``): a
        single node, a large enough request, no transactional batch, and no partition twice (each
        partition's sequence check must see the state after the one before it)."""
        threshold = self.config.write_off_loop_bytes
        if threshold <= 0 or self.replication is not None:
            return False
        if sum(len(item.records) for item, _, _ in prepared) < threshold:
            return False
        if len({id(partition_log) for _, partition_log, _ in prepared}) != len(prepared):
            return False
        return not any(header.is_transactional for _, _, headers in prepared for header in headers)

    async def _append(self, prepared: Prepared, want_durable: bool) -> Appended:
        """``_append_all``, or for a large request (``_write_off_loop``) the same steps with the
        writes on the writer thread: the sequence checks on the loop, the writes on the thread,
        the producer states updated back on the loop before any other request may touch these
        partitions (``AppendWriter``)."""
        if not self._write_off_loop(prepared):
            return self._append_all(prepared, want_durable)
        outcomes: list[ProduceOutcome | None] = [None] * len(prepared)
        states: list[PartitionProducerState | None] = [None] * len(prepared)
        for index, (item, partition_log, headers) in enumerate(prepared):
            try:
                checked = self._check_sequences(item, partition_log, headers)
            except LogstoreError as exc:
                outcomes[index] = _failed(item, exc)
                continue
            if isinstance(checked, ProduceOutcome):  # a duplicate: nothing to write
                outcomes[index] = checked
            else:
                states[index] = checked
        todo = [index for index, outcome in enumerate(outcomes) if outcome is None]

        def write() -> list[AppendResult | LogstoreError]:  # on the writer thread
            results: list[AppendResult | LogstoreError] = []
            for index in todo:
                item, partition_log, headers = prepared[index]
                try:
                    results.append(partition_log.append(item.records, headers=headers, sync=False))
                except LogstoreError as exc:
                    results.append(exc)
            return results

        def written(results: list[AppendResult | LogstoreError]) -> list[ProduceOutcome]:
            for index, result in zip(todo, results, strict=True):
                item, partition_log, headers = prepared[index]
                outcomes[index] = (
                    _failed(item, result) if isinstance(result, LogstoreError)
                    else _appended(item, partition_log, headers, states[index], result)
                )
            return [outcome for outcome in outcomes if outcome is not None]

        done = await self._append_writer.run(
            (partition_log for _, partition_log, _ in prepared), write, written
        )
        return done, _durable(prepared, done, want_durable)

    def _append_all(self, prepared: Prepared, want_durable: bool) -> Appended:
        """Check producer sequences, append, and update producer state — with no await in
        between, so nothing else can append to these partitions meanwhile."""
        outcomes: list[ProduceOutcome] = []
        replication = self.replication
        for item, partition_log, headers in prepared:
            try:
                leader_epoch = 0
                if replication is not None:
                    leader_epoch = replication.leader_epoch(item.topic, item.partition)
                    if want_durable:
                        replication.check_min_isr(item.topic, item.partition)
                checked = self._check_sequences(item, partition_log, headers)
                if isinstance(checked, ProduceOutcome):  # a duplicate: nothing to write
                    outcomes.append(checked)
                    continue
                for header in headers:
                    if header.is_transactional and not self.clustered:
                        self.transactions.add_produced(header.producer_id, item.topic, item.partition)
                        break
                result = partition_log.append(
                    item.records, headers=headers, leader_epoch=leader_epoch, sync=False
                )
            except LogstoreError as exc:
                outcomes.append(_failed(item, exc))
                continue
            outcomes.append(_appended(item, partition_log, headers, checked, result))
        return outcomes, _durable(prepared, outcomes, want_durable)

    def _check_sequences(
        self, item: ProduceItem, partition_log: PartitionLog, headers: list[BatchHeader]
    ) -> ProduceOutcome | PartitionProducerState | None:
        """An idempotent producer's sequence check before its append: a duplicate's outcome
        (nothing to append), or the producer state to update after the append; None when no
        batch is idempotent. Raises what the check refuses (OUT_OF_ORDER_SEQUENCE, ...)."""
        if not any(header.producer_id >= 0 for header in headers):
            return None
        state = self.producer_state(partition_log)
        original = state.check(headers)
        if original is None:
            return state
        return ProduceOutcome(
            item.topic, item.partition, original[0], original[1],
            partition_log.log_start_offset, duplicate=True,
        )


def _failed(item: ProduceItem, error: LogstoreError) -> ProduceOutcome:
    log.warning("append to %s/%s failed: %s", item.topic, item.partition, error)
    return ProduceOutcome(item.topic, item.partition, error=error)


def _appended(
    item: ProduceItem, partition_log: PartitionLog, headers: list[BatchHeader],
    state: PartitionProducerState | None, result: AppendResult,
) -> ProduceOutcome:
    """Record an idempotent producer's appended batches in its state; the outcome."""
    if state is not None:
        base = result.base_offset
        for header in headers:
            span = header.last_offset_delta + 1
            state.update(header, base, base + span - 1)
            base += span
    return ProduceOutcome(
        item.topic, item.partition, result.base_offset, result.last_offset,
        partition_log.log_start_offset,
    )


def _durable(prepared: Prepared, outcomes: list[ProduceOutcome], want_durable: bool) -> Durable:
    """The appended (or duplicate) partitions whose answer waits for an fsync (``flush=always``
    with acks=all): (index, log, the offset that must be durable)."""
    if not want_durable:
        return []
    return [
        (index, partition_log, outcome.last_offset + 1)
        for index, ((_, partition_log, _), outcome) in enumerate(zip(prepared, outcomes, strict=True))
        if outcome.error is None and partition_log.config.flush == FLUSH_ALWAYS
    ]
