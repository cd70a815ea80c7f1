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

``EndSending`` is the sender's part (a mixin of ``Sender``, which owns the state it names): the
end waits in ``_ending`` until nothing is queued or held for a retry, then goes in the request of
the last batches (``_end_with``) or alone (``_send_end``).

Thread-safety: a ``PendingEnd`` is made by the user's thread, sent by the sender thread and
resolved on the stream's reader thread; its ``future`` is a ``concurrent.futures.Future``.
``_ending`` is set by the user's thread (``end_transaction``) and taken by the sender thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from logstore.api.v1 import records_pb2
from logstore.client.batch import ProducerBatch
from logstore.client.channel import error_from_detail
from logstore.client.transactions import ProducerIdentity
from logstore.errors import LogstoreError

if TYPE_CHECKING:
    from logstore.client.accumulator import Accumulator
    from logstore.client.metadata import Metadata
    from logstore.client.stream import ProduceStream


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


class EndSending:
    """Provided by ``Sender``."""

    _ending: PendingEnd | None
    _held: dict[tuple[str, int], list[ProducerBatch]]
    _accumulator: Accumulator
    _identity: ProducerIdentity | None
    _metadata: Metadata
    _stream: Callable[[str], ProduceStream]
    _answer: Callable[[str, list[ProducerBatch], Any], None]

    def begin_flush(self) -> None:
        raise NotImplementedError

    def end_transaction(self, commit: bool) -> PendingEnd:
        """Send everything queued, then the transaction's end right behind it on the same
        stream (a single node only). Flushes until the caller's ``end_flush``."""
        pending = PendingEnd(commit)
        self._ending = pending
        self.begin_flush()
        return pending

    def _end_with(self, batches: list[ProducerBatch]) -> PendingEnd | None:
        """The transaction's end, when ``batches`` are its last: it goes in their request."""
        pending = self._ending
        if pending is None or self._held or self._accumulator.pending():
            return None
        self._ending = None
        pending.batches = batches
        return pending

    def _send_end(self) -> None:
        """The transaction's end alone, behind every batch sent (a single node: one stream)."""
        pending, self._ending = self._ending, None
        assert pending is not None and self._identity is not None
        stream = self._stream(self._metadata.address())
        correlation_id = stream.next_id()
        self._accumulator.request_sent()
        try:
            stream.send(correlation_id, pending.request(self._identity, correlation_id), pending)
        except LogstoreError as exc:
            self._accumulator.request_done()
            pending.failed(exc)

    def _answer_end(self, address: str, end: PendingEnd, response: Any) -> None:
        """The answer to a request carrying the end (and maybe the last batches): ``error``
        is the end's when the batches have results, the whole request's when they have none."""
        batches = end.batches
        if batches and (response.results or not response.HasField("error")):
            error = response.error if response.HasField("error") else None
            response.ClearField("error")
            self._answer(address, batches, response)
            if error is not None:
                response.error.CopyFrom(error)
        elif batches:  # the whole request failed: the end was not even tried
            self._answer(address, batches, response)
        end.answered(response)
