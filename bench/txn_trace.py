"""Where a transaction's time goes: the phases of ``send()`` x N + ``commit_transaction()``
(``python -m bench.txn_trace``).

Runs transactions of ``--records`` 100 B records (``send()`` per record, one partition of a
``flush=never`` topic, as ``bench client``'s transactional rows) against a broker process of its
own, with hooks in the producer that note ``time.perf_counter()`` at each step:

==============  =================================================================================
``last_send``   the last ``send()`` of the transaction returned
``end_sent``    the end went on the produce stream (with the last batches, or alone)
``answered``    the end's answer reached the stream's reader thread
``returned``    ``commit_transaction()`` returned
==============  =================================================================================

and, per transaction, when its first batch sent alone was answered, the calling thread's CPU time
in the ``send()`` loop, the client's CPU time (all threads), how many batches and requests it
took, and how many of its records were still unsent when the commit began (the tail); and the
broker process's CPU time per transaction (its mean over the run, warm-up included). The table
shows each phase's median and p90 over the transactions after the first ``--warmup``. A
diagnostic tool, not a timed bench.

``python -m bench.txn_trace [--records 10000] [--transactions 50] [--warmup 5]
[--option NAME=VALUE]``
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time
import uuid
from typing import Any

VALUE_BYTES = 100
PHASES = ("last_send", "end_sent", "answered", "returned")


class Trace:
    """The hooks' notes for the transaction under way (the caller's thread starts each)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.row: dict[str, float] = {}
        self.committing = False

    def start(self) -> None:
        self.row = {"begin": time.perf_counter(), "cpu0": time.process_time(),
                    "thread0": time.thread_time(), "requests": 0, "batches": 0,
                    "records_after_commit": 0}
        self.committing = False
        self.rows.append(self.row)

    def note(self, name: str) -> None:
        self.row.setdefault(name, time.perf_counter())


def install(trace: Trace) -> None:
    """Wrap the sender's send and the end's answer to note the phases (this process only)."""
    from logstore.client import sender, txn_end

    send_to = sender.Sender._send_to

    def traced_send_to(self: Any, address: str, batches: list[Any], end: Any = None) -> None:
        row = trace.row
        row["requests"] += 1
        row["batches"] += len(batches)
        if trace.committing:
            row["records_after_commit"] += sum(b.count if b.encoded is not None else len(b.values)
                                               for b in batches)
        if end is not None:
            trace.note("end_sent")
        send_to(self, address, batches, end)

    send_end = txn_end.EndSending._send_end

    def traced_send_end(self: Any) -> None:
        trace.note("end_sent")
        send_end(self)

    answered = txn_end.PendingEnd.answered

    def traced_answered(self: Any, response: Any) -> None:
        trace.note("answered")
        answered(self, response)

    on_response = sender.Sender._on_response

    def traced_on_response(self: Any, address: str, context: Any, response: Any) -> None:
        if not isinstance(context, txn_end.PendingEnd):
            trace.note("first_answer")
        on_response(self, address, context, response)

    sender.Sender._on_response = traced_on_response  # type: ignore[method-assign,assignment]
    sender.Sender._send_to = traced_send_to  # type: ignore[method-assign]
    txn_end.EndSending._send_end = traced_send_end  # type: ignore[method-assign]
    txn_end.PendingEnd.answered = traced_answered  # type: ignore[method-assign]


def run(server: str, topic: str, records: int, transactions: int, trace: Trace,
        options: dict[str, Any]) -> None:
    from logstore.client import Producer

    value = b"x" * VALUE_BYTES
    with Producer(server, transactional_id=f"trace-{uuid.uuid4().hex}", **options) as producer:
        producer.init_transactions()
        producer.partitions_for(topic)
        send = producer.send
        for _ in range(transactions):
            trace.start()
            producer.begin_transaction()
            for _ in range(records):
                send(topic, value, partition=0)
            trace.note("last_send")
            trace.row["loop_cpu"] = time.thread_time() - trace.row["thread0"]
            trace.committing = True
            producer.commit_transaction()
            trace.note("returned")
            trace.row["cpu"] = time.process_time() - trace.row["cpu0"]


def table(rows: list[dict[str, float]]) -> str:
    lines = [f"{'phase':<34}{'median ms':>10}{'p90 ms':>9}"]
    before = "begin"
    for phase in PHASES:
        steps = sorted((row[phase] - row[before]) * 1e3 for row in rows
                       if phase in row and before in row)
        if steps:
            label = f"{before} -> {phase}"
            p90 = steps[min(len(steps) - 1, int(len(steps) * 0.9))]
            lines.append(f"{label:<34}{statistics.median(steps):>10.2f}{p90:>9.2f}")
        before = phase
    total = sorted((row["returned"] - row["begin"]) * 1e3 for row in rows)
    lines.append(f"{'begin -> returned (whole)':<34}{statistics.median(total):>10.2f}"
                 f"{total[int(len(total) * 0.9)]:>9.2f}")
    answers = [(row["first_answer"] - row["last_send"]) * 1e3 for row in rows if "first_answer" in row]
    if answers:
        lines.append(f"{'last_send -> first batch answered':<34}{statistics.median(answers):>10.2f}"
                     f"   ({len(answers)} of {len(rows)} had one)")
    lines.append(f"{'caller CPU in the send() loop ms':<34}"
                 f"{statistics.median(r['loop_cpu'] for r in rows) * 1e3:>10.2f}")
    lines.append(f"{'client CPU per transaction ms':<34}{statistics.median(r['cpu'] for r in rows) * 1e3:>10.2f}")
    for name in ("requests", "batches", "records_after_commit"):
        lines.append(f"{name + ' per transaction':<34}{statistics.median(r[name] for r in rows):>10g}")
    return "\n".join(lines)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux: /proc)."""
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--transactions", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a Producer option (a Python literal), e.g. batch_bytes=262144")
    options = parser.parse_args()
    from bench.spawned import Broker
    from logstore.client import Admin

    broker = Broker("logstore-bench-txn-trace-")
    try:
        with Admin(broker.address) as admin:
            topic = f"trace-{uuid.uuid4().hex[:8]}"
            admin.create_topic(topic, 1, config={"flush": "never"})
            trace = Trace()
            install(trace)
            producer_options = {name: ast.literal_eval(value) for name, value in
                                (option.split("=", 1) for option in options.option)}
            before = process_cpu_s(broker.process.pid)
            run(broker.address, topic, options.records, options.transactions + options.warmup,
                trace, producer_options)
            broker_ms = (process_cpu_s(broker.process.pid) - before) * 1e3
            print(f"{options.records:,} records of {VALUE_BYTES} B per transaction, "
                  f"{options.transactions} transactions {producer_options or ''}")
            print(table(trace.rows[options.warmup:]))
            print(f"{'broker CPU per transaction ms':<34}"
                  f"{broker_ms / (options.transactions + options.warmup):>10.2f}   (mean)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
