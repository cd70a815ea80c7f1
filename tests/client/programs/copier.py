"""Copy records from an input topic into a sink topic as a consumer-group member, with one of the
three delivery guarantees; run (and SIGKILLed) by ``tests/client/test_guarantees.py``.

    python -m tests.client.programs.copier SERVER MODE INPUT SINK GROUP

MODE is ``at-most-once`` (commit, then copy), ``at-least-once`` (copy, then commit) or
``exactly-once`` (copy and commit in one transaction). Each iteration polls up to ``--batch``
records; the copy of a record is its value, produced to the sink with the same key. After each
iteration the program prints ``copied N`` (running total) and flushes stdout. It exits 0 once its
positions reach the input's end offsets (the input is complete before it starts).
"""

from __future__ import annotations

import argparse
import sys
import time

from logstore.client import Consumer, ConsumerRecord, Producer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("mode", choices=["at-most-once", "at-least-once", "exactly-once"])
    parser.add_argument("input")
    parser.add_argument("sink")
    parser.add_argument("group")
    parser.add_argument("--partitions", type=int, default=3, help="of the input topic")
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--pause-ms", type=float, default=5.0, help="between iterations")
    parser.add_argument("--work-ms", type=float, default=15.0,
                        help="how long processing a batch takes (its copies go out meanwhile)")
    args = parser.parse_args()

    exactly_once = args.mode == "exactly-once"
    producer = Producer(args.server, linger_ms=1,
                        **({"transactional_id": f"{args.group}-copier"} if exactly_once else {}))
    if exactly_once:
        producer.init_transactions()  # aborts what a killed predecessor left open
    consumer = Consumer(
        args.server,
        group_id=args.group,
        group_instance_id=f"{args.group}-copier",  # a restart takes the partitions over at once
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
        session_timeout_ms=5000,
    )
    consumer.subscribe([args.input])
    copied = 0
    while True:
        records = consumer.poll(max_records=args.batch, timeout=0.5)
        work_s = args.work_ms / 1000 if records else 0.0
        if args.mode == "at-most-once":
            consumer.commit()                             # cross off ...
            copy(producer, args.sink, records, work_s)    # ... then cook
        elif args.mode == "at-least-once":
            copy(producer, args.sink, records, work_s)    # cook ...
            consumer.commit()                             # ... then cross off
        else:
            producer.begin_transaction()                  # cook and cross off in one motion
            for record in records:
                producer.send(args.sink, record.value, key=record.key)
            time.sleep(work_s)
            producer.send_offsets_to_transaction(consumer.position_offsets(),
                                                 consumer.group_metadata())
            producer.commit_transaction()
        copied += len(records)
        print(f"copied {copied}", flush=True)
        if not records and len(consumer.assignment()) == args.partitions:
            positions = consumer.position_offsets()
            ends = consumer.end_offsets()
            if all(positions.get(tp, -1) >= end for tp, end in ends.items()):
                break
        time.sleep(args.pause_ms / 1000)
    consumer.close()
    producer.close()
    return 0


def copy(producer: Producer, sink: str, records: list[ConsumerRecord], work_s: float) -> None:
    """Send the copies; the batch's processing takes ``work_s`` while they go out."""
    futures = [producer.send(sink, record.value, key=record.key) for record in records]
    time.sleep(work_s)
    producer.flush()
    for future in futures:
        future.result()  # a failed copy ends the program (the test would see its exit code)


if __name__ == "__main__":
    sys.exit(main())
