"""The transaction coordinator's marker sender in a cluster (Kafka's TransactionMarkerChannelManager).

Restaurant model: the head waiter's note "table 7's order is final" (the PREPARE record) is
copied to the other kitchens before any cook is told; then every station that holds a dish of the
order gets the word — one runner per kitchen carrying all its stations' notes — and only when
each station has confirmed is the order struck off (COMPLETE).

When ``TransactionCoordinator`` ends a transaction (EndTxn, a timeout, a new instance's
InitProducerId, or loading a PREPARE_* state at a new leader epoch of ``__transaction_state``) it
hands the PREPARE_* transaction to ``MarkerSender.send``, which in a task:

1. waits until the high watermark of ``__transaction_state`` covers the PREPARE record (a new
   coordinator after a failover then finds it and finishes the markers itself);
2. groups the transaction's partitions by their current leader (the cluster metadata) and sends
   each leader one ``WriteTxnMarkers`` with all its partitions — or writes them directly when
   this broker leads them — with the broker's own credentials (TLS, token), as followers fetch;
3. retries the partitions that failed (NOT_LEADER, a broken connection, a timeout) after a
   backoff, looking their leaders up again, until all are written (a deleted topic's partitions
   are dropped);
4. writes COMPLETE_* (``TransactionCoordinator.finish``) and wakes the EndTxn calls waiting.

It stops, leaving the rest to the next coordinator, as soon as this broker no longer leads
``__transaction_state`` at the epoch the state was loaded at. While a transaction is PREPARE_*,
a new transaction of the same id (AddPartitionsToTxn, InitProducerId) is refused with the
retriable CONCURRENT_TRANSACTIONS.

Threading: event loop thread only; one task per transaction being ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from logstore.api.v1 import cluster_pb2, common_pb2, logstore_pb2_grpc
from logstore.broker import txn_markers
from logstore.broker.internal import TRANSACTIONS_TOPIC
from logstore.broker.transactions import Transaction
from logstore.errors import LogstoreError

if TYPE_CHECKING:
    from logstore.cluster.node import ClusterNode

log = logging.getLogger(__name__)

BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
#: One WriteTxnMarkers call may take this long (its leader waits for the high watermark).
CALL_TIMEOUT_S = 10.0

TopicPartition = tuple[str, int]


class MarkerSender:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.broker = node.broker
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: transactional id -> futures of the EndTxn calls waiting for its markers
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._stubs: dict[str, tuple[Any, Any]] = {}  # address -> (channel, stub)

    # -- the coordinator's hook ------------------------------------------------------------------

    def send(self, transaction: Transaction, commit: bool) -> None:
        """Send the PREPARE_* transaction's markers in the background (see the module doc)."""
        key = transaction.transactional_id
        previous = self._tasks.get(key)
        if previous is not None and not previous.done():
            previous.cancel()  # (state reloaded: the new task does the same, from the state)
        job = (key, transaction.producer_id, transaction.producer_epoch,
               sorted(transaction.partitions), commit)
        self._tasks[key] = asyncio.get_running_loop().create_task(self._run(*job))

    async def wait(self, transactional_id: str, timeout_s: float) -> bool:
        """Wait until the transaction being ended has its markers written and COMPLETE_*
        recorded; False if that took longer than ``timeout_s`` (or this broker stopped
        coordinating it). True at once when none is being ended."""
        task = self._tasks.get(transactional_id)
        if task is None or task.done():
            return not self._pending(transactional_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(transactional_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(transactional_id, [])
            if future in waiters:
                waiters.remove(future)
        return not self._pending(transactional_id)

    def _pending(self, transactional_id: str) -> bool:
        transaction = self.broker.transactions.transactions.get(transactional_id)
        return transaction is not None and transaction.state.startswith("prepare")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()

    # -- one transaction -------------------------------------------------------------------------

    async def _run(self, transactional_id: str, producer_id: int, epoch: int,
                   partitions: list[TopicPartition], commit: bool) -> None:
        coordinator = self.broker.transactions
        try:
            end = self.broker.data_dir.log(TRANSACTIONS_TOPIC, 0).log_end_offset
            remaining = set(partitions)
            backoff = BACKOFF_S
            replicated = False
            while coordinator.leads_loaded():
                try:
                    if not replicated:
                        await self.node.replicas.wait_replicated(TRANSACTIONS_TOPIC, 0, end)
                        replicated = True
                    remaining = await self._send_round(transactional_id, producer_id, epoch, remaining, commit)
                except LogstoreError as exc:
                    log.debug("transaction %s: markers wait: %s", transactional_id, exc.message)
                if not remaining and replicated:
                    if coordinator.finish(transactional_id, producer_id, epoch, commit):
                        log.debug("transaction %s: %s markers written", transactional_id,
                                  "commit" if commit else "abort")
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            log.info("transaction %s: no longer its coordinator; the next one finishes its markers",
                     transactional_id)
        finally:
            if self._tasks.get(transactional_id) is asyncio.current_task():
                del self._tasks[transactional_id]
                for future in self._waiters.pop(transactional_id, []):
                    if not future.done():
                        future.set_result(None)

    async def _send_round(self, transactional_id: str, producer_id: int, epoch: int,
                          remaining: set[TopicPartition], commit: bool) -> set[TopicPartition]:
        """One attempt at every remaining partition, one call per leader; returns those left."""
        metadata = self.node.metadata
        by_leader: dict[int, list[TopicPartition]] = {}
        left: set[TopicPartition] = set()
        for topic, partition in sorted(remaining):
            if topic not in metadata.topics:
                continue  # deleted: nothing to mark
            state = metadata.state(topic, partition)
            if state is None or state.leader < 0:
                left.add((topic, partition))
                continue
            by_leader.setdefault(state.leader, []).append((topic, partition))
        calls = [self._send_to(leader, transactional_id, producer_id, epoch, group, commit)
                 for leader, group in by_leader.items()]
        for failed in await asyncio.gather(*calls):
            left |= failed
        return left

    async def _send_to(self, leader: int, transactional_id: str, producer_id: int, epoch: int,
                       partitions: list[TopicPartition], commit: bool) -> set[TopicPartition]:
        """The markers of one leader's partitions; returns those not written."""
        if leader == self.node.broker_id:
            errors, written = txn_markers.write_here(self.broker, producer_id, epoch, partitions, commit)
            await txn_markers.wait_written(self.broker, written, errors, partitions)
            return {tp for tp, error in zip(partitions, errors, strict=True) if error is not None}
        address = self.node.metadata.address(leader)
        if address is None:
            return set(partitions)
        request = cluster_pb2.WriteTxnMarkersRequest(
            transactional_id=transactional_id, producer_id=producer_id, producer_epoch=epoch,
            commit=commit, partitions=[common_pb2.TopicPartition(topic=t, partition=p) for t, p in partitions],
        )
        try:
            response = await self._stub(address).WriteTxnMarkers(
                request, timeout=CALL_TIMEOUT_S, metadata=self._credentials())
        except grpc.aio.AioRpcError as exc:
            log.debug("transaction %s: markers to broker %d failed: %s %s", transactional_id, leader,
                      exc.code().name, exc.details())
            return set(partitions)
        return {(r.topic, r.partition) for r in response.results if r.HasField("error")}

    def _stub(self, address: str) -> Any:
        entry = self._stubs.get(address)
        if entry is None:
            channel = self.node.fetchers.channel(address)  # the broker's TLS settings
            entry = self._stubs[address] = (channel, logstore_pb2_grpc.LogStoreStub(channel))
        return entry[1]

    def _credentials(self) -> list[tuple[str, str]]:
        token = self.node.fetchers.token
        return [("authorization", f"Bearer {token}")] if token else []
