"""The caller's own send: with nothing in flight and the sender thread asleep, the thread in
``send()`` sends the batch its record opened (``Accumulator.send_direct``, ``Sender.send_direct``).
Against a broker: ``test_producer.py::test_an_idle_producer_has_sent_the_record_when_send_returns``."""

from __future__ import annotations

from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch
from logstore.client.partitioner import Partitioner


def asleep(linger_when_idle: bool = False) -> tuple[Accumulator, list[list[ProducerBatch]]]:
    """An accumulator whose sender sleeps, and whose direct sends drain into a list."""
    accumulator = Accumulator(batch_bytes=1 << 20, linger_ms=10_000, buffer_bytes=1 << 30,
                              describe=lambda topic: 1, partitioner=Partitioner(seed=1),
                              linger_when_idle=linger_when_idle)
    sent: list[list[ProducerBatch]] = []
    accumulator.send_direct = lambda: sent.append(accumulator.drain(1 << 20, direct=True)[0])
    accumulator.idle = True
    accumulator.wakeup.clear()
    return accumulator, sent


def test_a_record_opening_a_batch_with_nothing_in_flight_goes_from_the_caller() -> None:
    accumulator, sent = asleep()
    accumulator.append("t", b"v", partition=0)
    assert [[batch.record_count for batch in batches] for batches in sent] == [[1]]
    assert not accumulator.wakeup.is_set()  # the sender thread slept on
    assert not accumulator.opened and not accumulator.ready


def test_records_into_an_open_batch_do_not_send() -> None:
    accumulator, sent = asleep()
    accumulator.request_sent()  # a request in flight: the batch is held (Nagle)
    accumulator.append("t", b"v", partition=0)
    accumulator.append("t", b"w", partition=0)
    assert sent == []
    assert accumulator.wakeup.is_set()  # the sender times the hold, as before


def test_linger_when_idle_leaves_it_to_the_sender_thread() -> None:
    accumulator, sent = asleep(linger_when_idle=True)
    accumulator.append("t", b"v", partition=0)
    assert sent == []
    assert accumulator.wakeup.is_set()


def test_a_direct_drain_that_leaves_batches_wakes_the_sender() -> None:
    accumulator, _ = asleep()
    accumulator.send_direct = None
    accumulator.append("t", b"v", partition=0)
    accumulator.drain(1 << 20, room=lambda key: 0)  # closed, kept: the partition has no room
    assert len(accumulator.ready) == 1
    accumulator.idle = True  # the sender sleeps again
    accumulator.wakeup.clear()
    taken, _ = accumulator.drain(1 << 20, room=lambda key: 0, direct=True)
    assert taken == []
    assert accumulator.wakeup.is_set()  # what the caller left is the sender thread's
