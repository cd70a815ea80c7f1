"""The idempotent producer: on by default with acks=all, a producer id from the broker, sequence
numbers per partition, and retries after a broker SIGKILL that append nothing twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from logstore.client import Admin, Producer, produce_channel
from logstore.client.config import ProducerConfig
from logstore.errors import BatchTooLargeError
from tests.broker_fixture import BrokerProcess
from tests.client.helpers import read_all
from tests.client.proxy import AnswerHoldingProxy

Topic = Callable[..., str]


def test_idempotence_is_on_by_default_with_acks_all(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        producer.send(topic, b"a").result(10)
        assert producer.producer_id >= 0 and producer.producer_epoch == 0
    with Producer(server, acks=1) as producer:
        producer.send(topic, b"b").result(10)
        assert producer.producer_id == -1
    with Producer(server, enable_idempotence=False) as producer:
        producer.send(topic, b"c").result(10)
        assert producer.producer_id == -1


def test_each_producer_gets_its_own_id(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as first, Producer(server) as second:
        first.send(topic, b"a").result(10)
        second.send(topic, b"b").result(10)
        assert first.producer_id != second.producer_id


@pytest.mark.parametrize("options", [{"acks": 1}, {"acks": 0}, {"max_in_flight": 6}])
def test_asking_for_idempotence_with_settings_it_cannot_keep_is_an_error(
    options: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        ProducerConfig(enable_idempotence=True, **options)  # type: ignore[arg-type]
    assert not ProducerConfig(**options).idempotent  # type: ignore[arg-type]


def test_send_and_send_batch_from_two_threads_keep_one_sequence(server: str,
                                                                new_topic: Topic) -> None:
    """Batches ``send_batch`` encodes ahead may lose the race for a sequence to ``send``'s; the
    sender re-stamps them, and the broker sees one gap-free sequence."""
    topic = new_topic(1)
    with Producer(server, linger_ms=1, batch_bytes=2000) as producer:
        def bulk() -> None:
            for round_ in range(40):
                producer.send_batch(topic, [b"bulk-%d-%d" % (round_, i) for i in range(30)],
                                    partition=0)

        thread = threading.Thread(target=bulk)
        thread.start()
        futures = [producer.send(topic, b"single-%d" % i, partition=0) for i in range(1500)]
        thread.join()
        producer.flush()
        assert all(f.exception(10) is None for f in futures)
    values = [r.value for r in read_all(server, topic, 2700)]
    assert len(values) == len(set(values)) == 2700


def test_a_failed_batch_does_not_poison_the_partition(server: str, new_topic: Topic) -> None:
    """A batch the broker refuses leaves a gap in the sequences; the producer takes a new
    producer id, so the records after it still go through."""
    topic = new_topic(1, max_batch_bytes=2048)
    with Producer(server, linger_ms=0) as producer:
        first = producer.send(topic, b"small-1").result(10)
        too_big = producer.send(topic, b"x" * 4096)
        with pytest.raises(BatchTooLargeError):
            too_big.result(10)
        before = producer.producer_id
        after = [producer.send(topic, b"small-%d" % i) for i in range(2, 5)]
        assert [f.result(10).offset for f in after] == [first.offset + 1, first.offset + 2,
                                                        first.offset + 3]
        assert producer.producer_id != before


def wait_for_log_end(server: str, topic: str, end: int, timeout: float = 10.0) -> None:
    with Admin(server) as admin:
        deadline = time.monotonic() + timeout
        while admin.describe_topic(topic).partitions[0].log_end_offset < end:
            assert time.monotonic() < deadline, "the batches were not appended"
            time.sleep(0.02)


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_a_broker_killed_between_append_and_answer(broker: BrokerProcess, idempotent: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker appends a batch, then is SIGKILLed before its answer reaches the producer
    (a proxy in front of the gRPC port holds the answers back: the producer is kept off the
    stream port, which the proxy does not stand in front of); after the restart the producer
    sends the batch again. Idempotent: the broker, its producer state rebuilt from the log,
    answers with the original offsets and nothing is there twice. Without idempotence the retry
    is appended again."""
    monkeypatch.setattr(produce_channel, "CHANNEL_PRODUCE", False)
    with Admin(broker.address) as admin:
        admin.create_topic("orders", 1)
    proxy = AnswerHoldingProxy(broker.port)
    try:
        with Producer(proxy.address, linger_ms=20, retries=100, retry_backoff_ms=50,
                      retry_backoff_max_ms=200, enable_idempotence=idempotent) as producer:
            before = [producer.send("orders", b"before-%d" % i) for i in range(100)]
            producer.flush(10)
            proxy.hold()
            during = [producer.send("orders", b"during-%d" % i) for i in range(100)]
            wait_for_log_end(broker.address, "orders", 200)  # appended, answers held back
            broker.kill()
            proxy.drop_connections()
            broker.start()
            producer.flush(60)
            offsets = [f.result(0).offset for f in before + during]
            duplicates_answered = producer._sender.duplicates
    finally:
        proxy.close()
    values = [r.value for r in read_all(broker.address, "orders", 200 if idempotent else 201)]
    if idempotent:
        assert offsets == list(range(200))  # the retry got the original offsets
        assert duplicates_answered >= 1
        assert values == [b"before-%d" % i for i in range(100)] + [b"during-%d" % i for i in range(100)]
    else:
        assert len(values) > 200 and len(set(values)) == 200  # some appended twice
