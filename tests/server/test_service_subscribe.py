"""Subscribe over gRPC: existing records from each start position, then new ones as appended."""

from __future__ import annotations

import queue
import threading
import time

import grpc

from logstore.api.v1 import admin_pb2, records_pb2
from logstore.records import Record, decode_records, now_ms
from tests.server.helpers import TIMEOUT_S, create_topic, failure, produce, values, values_of


class Subscription:
    """A Subscribe call drained by a thread into a queue of (response, records)."""

    def __init__(self, stub, request: records_pb2.SubscribeRequest) -> None:
        self.call = stub.Subscribe(request, timeout=3 * TIMEOUT_S)
        self.queue: queue.Queue[tuple[records_pb2.SubscribeResponse, list[Record]] | Exception] = queue.Queue()
        self.last: records_pb2.SubscribeResponse | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for response in self.call:
                self.queue.put((response, decode_records(response.records)))
        except grpc.RpcError as err:
            self.queue.put(err)

    def take(self, count: int, timeout: float = TIMEOUT_S) -> list[Record]:
        """The next ``count`` records (whole batches, so possibly more); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        records: list[Record] = []
        while len(records) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(records)} of {count} records arrived: {records}"
            try:
                item = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            self.last, batch_records = item
            records += batch_records
        return records

    def idle(self, wait: float) -> bool:
        """True if nothing arrives within ``wait`` seconds."""
        try:
            item = self.queue.get(timeout=wait)
        except queue.Empty:
            return True
        self.queue.put(item)
        return False

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(TIMEOUT_S)


def _subscribe(stub, topic, start, **fields) -> Subscription:
    return Subscription(stub, records_pb2.SubscribeRequest(topic=topic, partition=0, start=start, **fields))


def test_subscribe_from_earliest_delivers_existing_then_new_records(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("old", 3))
    subscription = _subscribe(stub, topic, records_pb2.START_EARLIEST)
    try:
        existing = subscription.take(3)
        produce(stub, topic, values_of("new", 2))
        new = subscription.take(2)
    finally:
        subscription.close()

    assert [(r.offset, r.value) for r in existing] == list(enumerate(values_of("old", 3)))
    assert [(r.offset, r.value) for r in new] == [(3, b"new-0"), (4, b"new-1")]


def test_subscribe_from_latest_delivers_only_records_appended_after_it(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("old", 3))
    subscription = _subscribe(stub, topic, records_pb2.START_LATEST)
    try:
        # The server resolves LATEST when the call arrives, which the client cannot observe:
        # append one record at a time until the first shows up.
        for attempt in range(50):
            produce(stub, topic, [f"new-{attempt}".encode()])
            if not subscription.idle(0.1):
                break
        first = subscription.take(1)
        end = 3 + attempt + 1
        produce(stub, topic, [b"tail"])
        rest = subscription.take(end - first[-1].offset)
    finally:
        subscription.close()

    delivered = first + rest
    assert delivered[0].offset >= 3
    assert [r.offset for r in delivered] == list(range(delivered[0].offset, end + 1))
    assert all(r.value.startswith(b"new-") for r in delivered[:-1])
    assert delivered[-1].value == b"tail"


def test_subscribe_from_an_offset_delivers_from_that_offset(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("a", 3))
    produce(stub, topic, values_of("b", 3))
    subscription = _subscribe(stub, topic, records_pb2.START_OFFSET, offset=4)
    try:
        existing = [r for r in subscription.take(2) if r.offset >= 4]  # whole batch from 3
        produce(stub, topic, [b"c"])
        new = subscription.take(1)
    finally:
        subscription.close()

    assert [(r.offset, r.value) for r in existing + new] == [(4, b"b-1"), (5, b"b-2"), (6, b"c")]


def test_subscribe_from_a_timestamp_delivers_from_the_first_record_at_or_after_it(stub, topic):
    create_topic(stub, topic)
    base = now_ms() - 60_000
    for i in range(3):
        produce(stub, topic, values_of(f"t{i}", 2), timestamps=base + 1000 * i)
    subscription = _subscribe(stub, topic, records_pb2.START_TIMESTAMP, timestamp_ms=base + 500)
    try:
        existing = subscription.take(4)
        produce(stub, topic, [b"later"])
        new = subscription.take(1)
    finally:
        subscription.close()

    assert [r.offset for r in existing] == [2, 3, 4, 5]
    assert values(existing) == values_of("t1", 2) + values_of("t2", 2)
    assert [(r.offset, r.value) for r in new] == [(6, b"later")]


def test_subscribe_from_a_timestamp_newer_than_every_record_waits_for_new_ones(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("old", 2), timestamps=now_ms() - 60_000)
    subscription = _subscribe(stub, topic, records_pb2.START_TIMESTAMP, timestamp_ms=now_ms() + 60_000)
    try:
        assert subscription.idle(0.3)
        produce(stub, topic, [b"fresh"])
        new = subscription.take(1)
    finally:
        subscription.close()

    assert [(r.offset, r.value) for r in new] == [(2, b"fresh")]


def test_subscribe_responses_carry_the_partition_offsets(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, values_of("a", 3))
    subscription = _subscribe(stub, topic, records_pb2.START_EARLIEST)
    try:
        subscription.take(3)
    finally:
        subscription.close()

    assert subscription.last is not None
    assert (subscription.last.next_offset, subscription.last.high_watermark) == (3, 3)
    assert subscription.last.log_start_offset == 0


def test_subscribe_delivers_many_appends_in_order(stub, topic):
    create_topic(stub, topic)
    subscription = _subscribe(stub, topic, records_pb2.START_EARLIEST)
    try:
        for i in range(50):
            produce(stub, topic, [f"m{i}".encode()], acks=records_pb2.ACKS_LEADER)
        delivered = subscription.take(50)
    finally:
        subscription.close()

    assert [(r.offset, r.value) for r in delivered] == [(i, f"m{i}".encode()) for i in range(50)]


def test_a_subscription_to_a_deleted_topic_ends_with_not_found(stub, topic):
    create_topic(stub, topic)
    produce(stub, topic, [b"x"])
    call = stub.Subscribe(records_pb2.SubscribeRequest(topic=topic), timeout=TIMEOUT_S)
    try:
        assert values(decode_records(next(call).records)) == [b"x"]
        stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=topic), timeout=TIMEOUT_S)
        started = time.monotonic()
        try:
            extra = next(call)
        except grpc.RpcError as err:
            got = failure(err)
        else:
            raise AssertionError(f"the subscription went on after its topic was deleted: {extra}")
    finally:
        call.cancel()

    assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC")
    assert time.monotonic() - started < 2
