"""A transaction's end pipelined behind its last batch (``ProduceRequest.end_transaction``).

Ending a transaction the plain way takes two round trips in a row, and drains the produce
pipeline every transaction: ``flush`` (wait until every batch is answered), then ``EndTxn``. On
a single node ``commit_transaction`` instead asks the sender to put an end request on the produce
stream right behind the transaction's last batch, and waits for its answer alone. The broker
handles a stream's requests in order, so it sees the end after every batch; it commits only if
it appended every batch the producer sent in the transaction (the request carries, per partition,
the sequence number the producer's next batch there would have: one past its last record),
otherwise it aborts the transaction and answers TRANSACTION_ABORTED. A lost answer is harmless:
the stream sends the end again on its new call, and a commit that already happened is answered
OK.

Thread-safety: a ``PendingEnd`` is made by the user's thread, sent by the sender thread and
resolved on the stream's reader thread; its ``future`` is a ``concurrent.futures.Future``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from logstore.api.v1 import records_pb2
from logstore.client.batch import ProducerBatch
from logstore.client.channel import error_from_detail
from logstore.client.transactions import ProducerIdentity
from logstore.errors import LogstoreError


class PendingEnd:
    """One end: built when the sender sends it, resolved by its answer. It goes in the request
    of the transaction's last batches (``batches``) when they leave last, else alone."""

    __slots__ = ("commit", "future", "batches")

    def __init__(self, commit: bool) -> None:
        self.commit = commit
        self.future: Future[None] = Future()
        self.batches: list[ProducerBatch] = []

    def request(self, identity: ProducerIdentity, correlation_id: int) -> bytes:
        """A serialized request carrying the end alone."""
        return records_pb2.ProduceRequest(
            correlation_id=correlation_id, transactional_id=identity.transactional_id,
            end_transaction=records_pb2.EndTransaction.FromString(self.message(identity)),
        ).SerializeToString()

    def message(self, identity: ProducerIdentity) -> bytes:
        """The serialized ``EndTransaction``, with the sequences of every partition the
        transaction sent to (read when sent: after its last batch was stamped)."""
        with identity.lock:
            sequences = [
                records_pb2.PartitionSequence(
                    topic=topic, partition=partition,
                    next_sequence=identity.next_sequences.get((topic, partition), 0),
                )
                for topic, partition in sorted(identity.transaction_partitions)
            ]
            return records_pb2.EndTransaction(
                producer_id=identity.producer_id, producer_epoch=identity.epoch,
                commit=self.commit, sequences=sequences,
            ).SerializeToString()

    def answered(self, response: Any) -> None:
        if response.HasField("error"):
            self.failed(error_from_detail(response.error))
        elif not self.future.done():
            self.future.set_result(None)

    def failed(self, error: LogstoreError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
