"""The sender in a (scripted) cluster: batches per leader, and retries to a new leader that keep
their bytes, sequence numbers and per-partition order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from logstore.client.accumulator import Accumulator
from logstore.client.config import ProducerConfig
from logstore.client.metadata import Metadata
from logstore.client.sender import Sender
from logstore.client.transactions import ProducerIdentity
from logstore.errors import NotLeaderError, UnavailableError
from tests.client.helpers import wait_until
from tests.client.scripted import BROKERS, RecordingStream, ScriptedCluster


class Harness:
    def __init__(self, leaders: dict[tuple[str, int], int], **options: Any) -> None:
        self.cluster = ScriptedCluster(leaders)
        config = ProducerConfig(linger_ms=0, retry_backoff_ms=1, retry_backoff_max_ms=2, **options)
        self.metadata = Metadata(BROKERS[1], self.cluster, retries=0,  # type: ignore[arg-type]
                                 retry_backoff_ms=1, retry_backoff_max_ms=1, timeout_s=1.0)
        self.accumulator = Accumulator(batch_bytes=config.batch_bytes, linger_ms=0,
                                       buffer_bytes=config.buffer_bytes,
                                       describe=lambda t: self.metadata.topic(t).partition_count)
        identity = None
        if config.idempotent:
            identity = ProducerIdentity(self.cluster, BROKERS[1], config)
            self.accumulator.sequences = {}
        self.streams: dict[str, RecordingStream] = {}
        self.sender = Sender(self.accumulator, self._open, config, self._refresh, self.metadata,
                             identity)

    def _open(self, address: str, on_response: Any, on_failure: Any) -> RecordingStream:
        stream = self.streams[address] = RecordingStream(address, on_response, on_failure)
        return stream

    def _refresh(self, topics: list[str]) -> None:
        view = self.metadata.refresh(topics, retries=0)
        for topic in topics:
            self.accumulator.grow(topic, view.topics[topic].partition_count)

    def sent(self, broker: int) -> list[Any]:
        stream = self.streams.get(BROKERS[broker])
        return [] if stream is None else stream.sent

    def records(self, broker: int, partition: int) -> list[bytes]:
        """The record bytes each request to ``broker`` carried for ``t``/``partition``."""
        return [p.records for _id, request, _ctx in self.sent(broker) for p in request.partitions
                if p.partition == partition]

    def send(self, partition: int, value: bytes, *, requests: int, broker: int) -> Any:
        """Send one record and wait until ``broker`` got its ``requests``-th request."""
        future = self.accumulator.append("t", value, partition=partition)
        wait_until(lambda: len(self.sent(broker)) >= requests)
        return future


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    options = getattr(request, "param", {})
    made = Harness({("t", 0): 1, ("t", 1): 2}, **options)
    yield made
    made.sender.stop(1.0)


def test_each_partitions_batches_go_to_its_leader(harness: Harness) -> None:
    harness.send(0, b"zero", requests=1, broker=1)
    harness.send(1, b"one", requests=1, broker=2)
    assert [p.partition for _i, r, _c in harness.sent(1) for p in r.partitions] == [0]
    assert [p.partition for _i, r, _c in harness.sent(2) for p in r.partitions] == [1]


def test_not_leader_resends_the_same_bytes_to_the_new_leader(harness: Harness) -> None:
    future = harness.send(0, b"v", requests=1, broker=1)
    first = harness.records(1, 0)
    harness.cluster.leaders[("t", 0)] = 2
    harness.streams[BROKERS[1]].answer(0, {("t", 0): "NOT_LEADER"})
    wait_until(lambda: harness.records(2, 0))
    assert harness.records(2, 0) == first  # same producer id, epoch and sequence: no duplicate
    harness.streams[BROKERS[2]].answer(0, {("t", 0): 41})
    assert future.result(5).offset == 41


def test_retried_batches_keep_their_order_and_go_before_newer_ones(harness: Harness) -> None:
    one = harness.send(0, b"1", requests=1, broker=1)
    two = harness.send(0, b"2", requests=2, broker=1)
    sent_first = harness.records(1, 0)
    harness.cluster.leaders[("t", 0)] = 2
    harness.streams[BROKERS[1]].answer(0, {("t", 0): "NOT_LEADER"})
    three = harness.accumulator.append("t", b"3", partition=0)
    harness.sender.begin_flush()
    wait_until(lambda: one._batch.attempts == 1)
    assert harness.records(2, 0) == []  # batch 2 is still unanswered at broker 1: wait for it
    harness.streams[BROKERS[1]].answer(1, {("t", 0): "NOT_LEADER"})
    # 1 and 2 as they were, each alone (the new leader may have 1 and not 2), then 3
    for index, expected in enumerate(sent_first):
        wait_until(lambda index=index: len(harness.records(2, 0)) > index)
        assert harness.records(2, 0)[index] == expected
        assert len(harness.records(2, 0)) == index + 1  # the next waits for this answer
        harness.streams[BROKERS[2]].answer(index, {("t", 0): 10 + index})
    wait_until(lambda: len(harness.records(2, 0)) == 3)
    harness.streams[BROKERS[2]].answer(2, {("t", 0): 12})
    assert [f.result(5).offset for f in (one, two, three)] == [10, 11, 12]


def test_a_broken_stream_in_a_cluster_reroutes_its_batches(harness: Harness) -> None:
    future = harness.send(1, b"v", requests=1, broker=2)
    harness.cluster.leaders[("t", 1)] = 3
    _id, _request, batches = harness.sent(2)[0]
    harness.streams[BROKERS[2]].on_failure(batches, UnavailableError("the broker ended the stream"))
    wait_until(lambda: harness.records(3, 1))
    harness.streams[BROKERS[3]].answer(0, {("t", 1): 5})
    assert future.result(5).offset == 5


@pytest.mark.parametrize("harness", [{"retries": 1}], indirect=True)
def test_a_batch_fails_once_its_retries_are_used(harness: Harness) -> None:
    future = harness.send(0, b"v", requests=1, broker=1)
    harness.streams[BROKERS[1]].answer(0, {("t", 0): "NOT_LEADER"})
    wait_until(lambda: len(harness.sent(1)) == 2)  # the map still names broker 1
    harness.streams[BROKERS[1]].answer(1, {("t", 0): "NOT_LEADER"})
    with pytest.raises(NotLeaderError):
        future.result(5)


@pytest.mark.parametrize("harness", [{"acks": 1}], indirect=True)
def test_without_idempotence_not_enough_replicas_is_retried_too(harness: Harness) -> None:
    future = harness.send(0, b"v", requests=1, broker=1)
    harness.streams[BROKERS[1]].answer(0, {("t", 0): "NOT_ENOUGH_REPLICAS"})
    wait_until(lambda: len(harness.sent(1)) == 2)
    assert harness.records(1, 0)[0] == harness.records(1, 0)[1]
    harness.streams[BROKERS[1]].answer(1, {("t", 0): 3})
    assert future.result(5).offset == 3


def test_batches_wait_while_no_broker_answers_metadata(harness: Harness) -> None:
    future = harness.send(0, b"v", requests=1, broker=1)
    harness.cluster.unreachable = set(BROKERS.values())
    harness.streams[BROKERS[1]].answer(0, {("t", 0): "NOT_LEADER"})
    wait_until(lambda: len(harness.cluster.metadata_calls) >= 4)  # tried, held again, tried
    assert not future.done()
    harness.cluster.leaders[("t", 0)] = 3
    harness.cluster.unreachable = set()
    wait_until(lambda: harness.records(3, 0))
    harness.streams[BROKERS[3]].answer(0, {("t", 0): 8})
    assert future.result(5).offset == 8


def test_a_batch_refused_out_of_order_behind_a_failed_one_goes_again_after_it(harness: Harness) -> None:
    # batch 1's stream failed; batch 2, sent on a new stream, reached the broker first
    one = harness.send(0, b"1", requests=1, broker=1)
    two = harness.send(0, b"2", requests=2, broker=1)
    first, second = harness.records(1, 0)
    _id, _request, batches = harness.sent(1)[0]
    harness.streams[BROKERS[1]].on_failure(batches, UnavailableError("the stream broke"))
    wait_until(lambda: one._batch.attempts == 1)
    harness.streams[BROKERS[1]].answer(1, {("t", 0): "OUT_OF_ORDER_SEQUENCE"})
    wait_until(lambda: len(harness.records(1, 0)) == 3)
    assert harness.records(1, 0)[2] == first  # batch 1 again, alone
    harness.streams[BROKERS[1]].answer(2, {("t", 0): 20})
    wait_until(lambda: len(harness.records(1, 0)) == 4)
    assert harness.records(1, 0)[3] == second  # then batch 2, the same bytes
    harness.streams[BROKERS[1]].answer(3, {("t", 0): 21})
    assert [f.result(5).offset for f in (one, two)] == [20, 21]
