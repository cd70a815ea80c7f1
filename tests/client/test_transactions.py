"""Transactional producers: commit and abort across topics and partitions, read_committed
readers, offsets committed with the transaction, zombie fencing, timeouts, misuse."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from logstore.client import Consumer, Producer, TopicPartition
from logstore.errors import (
    InvalidTransactionStateError,
    ProducerFencedError,
    TransactionAbortedError,
)

Topic = Callable[..., str]


def txn_id() -> str:
    return f"txn-{uuid.uuid4().hex[:8]}"


def read(server: str, topic: str, isolation_level: str = "read_committed") -> list[bytes | None]:
    """Every value a reader with ``isolation_level`` sees of ``topic`` (all partitions) up to
    the end it may read (read_committed: the last stable offset), sorted."""
    values: list[bytes | None] = []
    with Consumer(server, auto_offset_reset="earliest", isolation_level=isolation_level,
                  fetch_max_wait_ms=50) as consumer:
        consumer.assign(topic)
        ends = consumer.end_offsets()
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline
            values += [r.value for r in consumer.poll(timeout=0.1)]
    return sorted(values, key=lambda v: v or b"")


def test_a_committed_transaction_is_seen_whole_across_topics(server: str,
                                                             new_topic: Topic) -> None:
    orders, invoices = new_topic(3), new_topic(2)
    with Producer(server, transactional_id=txn_id()) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(6):
            producer.send(orders, b"order-%d" % i, key=b"%d" % i)
        producer.send_batch(invoices, [b"invoice-0", b"invoice-1"], partition=1)
        producer.commit_transaction()
    assert read(server, orders) == [b"order-%d" % i for i in range(6)]
    assert read(server, invoices) == [b"invoice-0", b"invoice-1"]


def test_an_aborted_transaction_is_never_seen_by_read_committed(server: str,
                                                                new_topic: Topic) -> None:
    topic = new_topic(2)
    with Producer(server, transactional_id=txn_id()) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"kept", partition=0)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(4):
            producer.send(topic, b"dropped-%d" % i, partition=i % 2)
        producer.flush()  # appended to the log ...
        producer.abort_transaction()  # ... and then aborted
        producer.begin_transaction()
        producer.send(topic, b"after", partition=1)
        producer.commit_transaction()
    assert read(server, topic) == [b"after", b"kept"]
    assert len(read(server, topic, "read_uncommitted")) == 6  # the aborted ones are in the log


def test_read_committed_waits_for_an_open_transaction(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server, transactional_id=txn_id()) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"pending", partition=0)
        producer.flush()
        assert read(server, topic) == []
        assert read(server, topic, "read_uncommitted") == [b"pending"]
        producer.commit_transaction()
    assert read(server, topic) == [b"pending"]


def test_offsets_sent_to_a_transaction_count_only_if_it_commits(server: str,
                                                                new_topic: Topic) -> None:
    source, sink = new_topic(1), new_topic(1)
    with Producer(server) as plain:
        plain.send_batch(source, [b"a", b"b", b"c"], partition=0).result(10)
    group = f"group-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(source, 0)
    with Producer(server, transactional_id=txn_id()) as producer, \
            Consumer(server, group_id=group, enable_auto_commit=False,
                     auto_offset_reset="earliest", isolation_level="read_committed") as consumer:
        producer.init_transactions()
        consumer.subscribe([source])
        records = []
        deadline = time.monotonic() + 10
        while len(records) < 3 and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.2)
        producer.begin_transaction()
        producer.send(sink, b"copy", partition=0)
        producer.send_offsets_to_transaction(consumer.position_offsets(),
                                             consumer.group_metadata())
        producer.abort_transaction()
        assert consumer.committed() == {tp: None}
        producer.begin_transaction()
        producer.send(sink, b"copy", partition=0)
        producer.send_offsets_to_transaction({tp: 3}, consumer.group_metadata())
        producer.commit_transaction()
        assert consumer.committed() == {tp: 3}
    assert read(server, sink) == [b"copy"]


def test_a_new_instance_fences_the_zombie(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    transactional_id = txn_id()
    zombie = Producer(server, transactional_id=transactional_id)
    zombie.init_transactions()
    zombie.begin_transaction()
    zombie.send(topic, b"zombie", partition=0)
    zombie.flush()
    with Producer(server, transactional_id=transactional_id) as successor:
        successor.init_transactions()  # aborts the zombie's open transaction, bumps the epoch
        assert successor.producer_epoch == zombie.producer_epoch + 1
        with pytest.raises(ProducerFencedError):
            zombie.commit_transaction()
        successor.begin_transaction()
        successor.send(topic, b"successor", partition=0)
        successor.commit_transaction()
    zombie.close()
    assert read(server, topic) == [b"successor"]


def test_a_transaction_open_past_its_timeout_is_aborted(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server, transactional_id=txn_id(), transaction_timeout_ms=300) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"too-slow", partition=0)
        producer.flush()
        time.sleep(1.0)
        with pytest.raises(ProducerFencedError):
            producer.commit_transaction()
        producer.init_transactions()  # the producer can start over
        producer.begin_transaction()
        producer.send(topic, b"in-time", partition=0)
        producer.commit_transaction()
    assert read(server, topic) == [b"in-time"]


def test_transaction_calls_out_of_order_are_refused(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server, transactional_id=txn_id()) as producer:
        with pytest.raises(InvalidTransactionStateError):
            producer.begin_transaction()  # before init_transactions
        producer.init_transactions()
        with pytest.raises(InvalidTransactionStateError):
            producer.send(topic, b"outside")  # no transaction open
        with pytest.raises(InvalidTransactionStateError):
            producer.commit_transaction()
        producer.begin_transaction()
        with pytest.raises(InvalidTransactionStateError):
            producer.begin_transaction()
        producer.abort_transaction()
    with Producer(server) as plain, pytest.raises(InvalidTransactionStateError):
        plain.begin_transaction()


def test_a_record_sent_after_the_transaction_ended_is_refused(server: str, new_topic: Topic) -> None:
    # send() checks the transaction only for a record that opens a batch: every batch of the
    # transaction must be closed once it ends, so the next record is checked again
    topic = new_topic(1)
    with Producer(server, transactional_id=txn_id()) as producer:
        producer.init_transactions()
        for end in (producer.commit_transaction, producer.abort_transaction):
            producer.begin_transaction()
            producer.send(topic, b"inside", partition=0)
            producer.send(topic, b"inside")  # the sticky partition: the same open batch
            end()
            for arguments in ({"partition": 0}, {}):
                with pytest.raises(InvalidTransactionStateError):
                    producer.send(topic, b"outside", **arguments)
    assert read(server, topic) == [b"inside", b"inside"]


def test_a_failed_record_makes_the_commit_fail(server: str, new_topic: Topic) -> None:
    topic = new_topic(1, max_batch_bytes=2048)
    with Producer(server, transactional_id=txn_id(), linger_ms=0) as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"fine", partition=0)
        producer.send(topic, b"x" * 4096, partition=0)  # too large for the topic
        with pytest.raises(TransactionAbortedError):
            producer.commit_transaction()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, b"next", partition=0)
        producer.commit_transaction()
    assert read(server, topic) == [b"next"]


def test_a_transactional_producer_lingers_while_idle_unless_told_not_to(server: str) -> None:
    with Producer(server, transactional_id=txn_id()) as transactional, Producer(server) as plain, \
            Producer(server, transactional_id=txn_id(), linger_when_idle=False) as eager:
        lingering = [p._accumulator.linger_when_idle for p in (transactional, plain, eager)]
    assert lingering == [True, False, False]
