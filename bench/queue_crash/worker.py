"""One queue worker process: ``python -m bench.queue_crash.worker SERVER GROUP TOPIC HISTORY ID``.

Each task's value is ``task-<n>``: ``n % POISON_EVERY == POISON_AT`` is poison (always rejected),
``n % FLAKY_EVERY == FLAKY_AT`` fails its first delivery (released with a delay), the rest are
accepted after ``--work-ms``. The history is JSON lines, flushed one by one (a SIGKILL loses at
most the line being written)::

    {"ev": "deliver", "w": ID, "p": partition, "o": offset, "dc": delivery count, "t": wall s
     when the fetch was asked for (with --prefetch, by an earlier poll)}
    {"ev": "sent", "w": ID, "p", "o", "kind": "accept"|"release"|"reject", "t"}   before the call
    {"ev": "ok", ...same}        the broker answered and applied it
    {"ev": "refused", ..., "state": why}   the broker answered and refused it

SIGTERM: finish the batch, acknowledge, leave.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from logstore.client import ShareConsumer, ShareRecord
from logstore.errors import LogstoreError

POISON_EVERY, POISON_AT = 50, 7
FLAKY_EVERY, FLAKY_AT = 20, 3
RELEASE_DELAY_MS = 100


def kind_for(record: ShareRecord) -> str:
    n = int((record.value or b"task-0").split(b"-")[1])
    if n % POISON_EVERY == POISON_AT:
        return "reject"
    if n % FLAKY_EVERY == FLAKY_AT and record.delivery_count == 1:
        return "release"
    return "accept"


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("server", "group", "topic", "history", "id"):
        parser.add_argument(name)
    parser.add_argument("--work-ms", type=float, default=2.0)
    parser.add_argument("--max-records", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=0, help="fetches in flight beyond the polled one")
    args = parser.parse_args()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    history = open(args.history, "a", buffering=1)  # noqa: SIM115 - open for the whole run

    def write(ev: str, p: int, o: int, **fields: Any) -> None:
        history.write(json.dumps({"ev": ev, "w": args.id, "p": p, "o": o, "t": time.time(), **fields}) + "\n")

    consumer = ShareConsumer(args.server, args.group, args.topic, max_records=args.max_records, timeout=5,
                             prefetch=args.prefetch)
    # When each poll of the current stream began: with prefetch the records a poll returns were
    # asked for by an earlier poll, and their lock may have started as early as that one began;
    # the history's "deliver" time is that (the checker reasons about lock expiry from it), and
    # "got" when the poll returned them (a long poll asked early may return after a later one).
    poll_starts: list[float] = []
    while not stopping:
        poll_starts.append(time.time())
        try:
            records = consumer.poll(timeout=0.5)
        except LogstoreError:
            poll_starts.clear()  # the stream died: the next poll sends afresh
            time.sleep(0.1)
            continue
        asked_at = poll_starts[max(0, len(poll_starts) - 1 - args.prefetch)]
        answered_at = time.time()
        sent = []
        for record in records:
            write("deliver", record.partition, record.offset, dc=record.delivery_count, t=asked_at,
                  got=answered_at)
        for record in records:
            time.sleep(args.work_ms / 1000)
            kind = kind_for(record)
            delay = RELEASE_DELAY_MS if kind == "release" else None
            write("sent", record.partition, record.offset, kind=kind)
            if kind == "accept":
                record.ack()  # the per-record hot path
            else:
                consumer.acknowledge([record], kind, delay_ms=delay, error=kind)
            sent.append((record, kind))
        while sent:
            try:
                refused = consumer.commit(raise_refused=False)
            except LogstoreError:
                if stopping:
                    break
                time.sleep(0.1)
                continue  # queued again by the client: sent with the next try
            bad = {}
            for error in refused:
                for offset in range(error.first_offset, error.last_offset + 1):  # type: ignore[attr-defined]
                    bad[(error.fields.get("partition"), offset)] = str(error.fields.get("state"))
            for record, kind in sent:
                state = bad.get((record.partition, record.offset))
                if state is None:
                    write("ok", record.partition, record.offset, kind=kind)
                else:
                    write("refused", record.partition, record.offset, kind=kind, state=state)
            sent = []
    try:
        consumer.close()
    except LogstoreError:
        pass
    history.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
