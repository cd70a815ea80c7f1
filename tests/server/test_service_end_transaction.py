"""ProduceStream's end_transaction: a transaction ended behind its last batch, on the stream."""

from __future__ import annotations

import uuid

from logstore.api.v1 import common_pb2, records_pb2, transactions_pb2
from logstore.records import decode_records, encode_batch
from tests.server.helpers import TIMEOUT_S, create_topic


def _transactional(topic: str, tid: str, pid: int, epoch: int, sequence: int, *values: bytes
                   ) -> records_pb2.ProduceRequest:
    batch = encode_batch(list(values), producer_id=pid, producer_epoch=epoch,
                         base_sequence=sequence, transactional=True)
    return records_pb2.ProduceRequest(
        transactional_id=tid,
        partitions=[records_pb2.PartitionRecords(topic=topic, partition=0, records=batch)],
    )


def _end(tid: str, pid: int, epoch: int, next_sequence: dict[str, int]) -> records_pb2.ProduceRequest:
    return records_pb2.ProduceRequest(transactional_id=tid, end_transaction=records_pb2.EndTransaction(
        producer_id=pid, producer_epoch=epoch, commit=True,
        sequences=[records_pb2.PartitionSequence(topic=t, partition=0, next_sequence=s)
                   for t, s in next_sequence.items()],
    ))


def _committed(stub, topic: str) -> tuple[list[bytes], int]:  # type: ignore[no-untyped-def]
    """The values a read_committed fetch returns, and the last stable offset."""
    response = stub.Fetch(records_pb2.FetchRequest(
        partitions=[records_pb2.FetchPartition(topic=topic, partition=0, offset=0)],
        isolation_level=common_pb2.READ_COMMITTED,
    ), timeout=TIMEOUT_S)
    (fetched,) = response.partitions
    aborted = [(a.first_offset, a.last_offset) for a in fetched.aborted_transactions]
    kept = [r.value for r in decode_records(fetched.records)
            if not any(first <= r.offset <= last for first, last in aborted)]
    return kept, fetched.last_stable_offset


def test_an_end_behind_the_batches_commits_them_and_a_short_count_aborts(stub, topic):
    create_topic(stub, topic)
    tid = f"end-{uuid.uuid4().hex[:8]}"
    ids = stub.InitProducerId(transactions_pb2.InitProducerIdRequest(transactional_id=tid),
                              timeout=TIMEOUT_S)
    pid, epoch = ids.producer_id, ids.producer_epoch
    requests = [
        _transactional(topic, tid, pid, epoch, 0, b"a", b"b"),
        _transactional(topic, tid, pid, epoch, 2, b"c"),
        _end(tid, pid, epoch, {topic: 3}),  # commits: the broker has sequences 0..2
        _end(tid, pid, epoch, {topic: 3}),  # sent again (a lost answer): done already
        _transactional(topic, tid, pid, epoch, 3, b"d"),
        _end(tid, pid, epoch, {topic: 5}),  # the producer counts a batch the broker lacks
    ]

    responses = list(stub.ProduceStream(iter(requests), timeout=TIMEOUT_S))

    assert [r.HasField("error") for r in responses] == [False] * 5 + [True]
    assert responses[5].error.reason == "TRANSACTION_ABORTED"
    assert "expects sequence 4 next" in responses[5].error.message
    # records 0-2, the commit marker at 3, "d" at 4 and the abort marker at 5: nothing open
    assert _committed(stub, topic) == ([b"a", b"b", b"c"], 6)
