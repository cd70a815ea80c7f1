"""Where one record's end-to-end latency goes: timestamps at every hop (``python -m bench.latency_trace``).

Runs the peers bench's latency workload (a ``send()`` stamped with the wall clock at a fixed rate,
a second process ``poll()``ing its ``Subscribe`` stream) against a broker process of its own, with
hooks in all three processes that note ``time.time_ns()`` (one clock for every process) at each
hop of a record:

====================  ==========================================================================
``sender``            the producer's sender thread starts sending the request (``Sender._send``)
``queued``            the request is on the produce stream's queue (``ProduceStream.send``)
``grpc_took``         gRPC's request thread took it from the queue
``broker_read``       the broker parsed it (``wire.parse_produce_request``)
``appended``          the append moved the log end past the record (``Wakeups.on_append``)
``pushed``            the Subscribe stream encoded the batch carrying it
``reader``            the consumer's stream reader thread got it from gRPC
``consumer``          the consumer's thread took it off the queue (``Fetcher._store``)
``poll``              ``poll()`` returned it
``acked``             (the producer's side) its answer reached the produce stream's reader
====================  ==========================================================================

The table shows, per hop, the median and p99 of the time since ``send()`` and of the step from
the hop before. Offsets tie the hops together (one partition, a new topic: offset = record
number); a producer request's offsets come from its answer. A diagnostic tool, not a timed bench:
the hooks cost a few µs per hop.

Last, the floor: ``bench/raw_relay.py``, the same gRPC hops and threads with no logstore code, one
message per record at ``--floor-rate``.

``python -m bench.latency_trace [--rate 1000 10000] [--seconds 2] [--linger-ms MS]
[--late-factor F] [--watch MS] [--slowest N] [--sessions one|own] [--checkpoint-ms MS]``
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench.trace_report import hop_times, report, slowest_report, stall_report

EVENTS_ENV = "LOGSTORE_TRACE_EVENTS"
#: Set (to the threshold in ms): every process runs a ``bench.stall_watch`` watchdog.
WATCH_ENV = "LOGSTORE_TRACE_WATCH_MS"
#: Set to a file name: the broker's loop thread runs under cProfile, its stats written there.
PROFILE_ENV = "LOGSTORE_TRACE_PROFILE"
HOPS = ("sender", "queued", "grpc_took", "broker_read", "appended", "pushed", "reader",
        "consumer", "poll")

#: event name -> list of (key, time_ns) noted by this process's hooks.
_events: dict[str, list[tuple[int, int]]] = {}
#: This process's stall watchdog's notes (``--watch``).
_stalls: list[dict[str, Any]] = []


def start_watch(loop: Any = None) -> None:
    """With $LOGSTORE_TRACE_WATCH_MS set, watch this process for stalls (see ``stall_watch``)."""
    threshold = os.environ.get(WATCH_ENV)
    if not threshold:
        return
    from bench.stall_watch import StallWatch

    watch = StallWatch(_events, threshold_ms=float(threshold), loop=loop)
    _stalls.clear()
    _watches.append(watch)


_watches: list[Any] = []


def _stall_infos() -> list[dict[str, Any]]:
    return [info for watch in _watches for info in watch.infos]


def _note(name: str, key: int) -> None:
    _events.setdefault(name, []).append((key, time.time_ns()))


def watch_gc() -> None:
    """Note every cyclic collection of this process: ``gc<generation>`` events of
    (duration_ns, start time_ns), so the report can say whether collections own the tail."""
    import gc

    started = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        now = time.time_ns()
        if phase == "start":
            started[0] = now
        else:
            _events.setdefault(f"gc{info['generation']}", []).append((now - started[0], started[0]))

    gc.callbacks.append(callback)


# -- hooks --------------------------------------------------------------------------------------


#: ``thread_switches()`` as the producer closes (its threads end with it).
_at_close: dict[str, int] = {}


def hook_producer() -> None:
    watch_gc()
    from logstore.client import producer, sender, stream

    close = producer.Producer.close

    def traced_close(self: Any, *args: Any, **kwargs: Any) -> None:
        self.flush()
        _at_close.clear()
        _at_close.update(thread_switches())
        close(self, *args, **kwargs)

    producer.Producer.close = traced_close  # type: ignore[method-assign]

    send_batches = sender.Sender._send
    stream_send = stream.ProduceStream.send
    answer = stream.ProduceStream._answer
    open_call = stream.ProduceStream._open
    local = threading.local()

    def traced_send(self: Any, batches: Any, *rest: Any) -> Any:
        local.started = time.time_ns()
        if threading.current_thread() is not self._thread:  # send()'s own thread
            _note("direct", 0)
        return send_batches(self, batches, *rest)

    def traced_stream_send(self: Any, correlation_id: int, payload: bytes, context: Any) -> None:
        _events.setdefault("sender", []).append((correlation_id, local.started))
        _note("queued", correlation_id)
        self._trace_order = getattr(self, "_trace_order", [])
        self._trace_order.append(correlation_id)
        stream_send(self, correlation_id, payload, context)

    def traced_answer(self: Any, response: Any) -> None:
        now = time.time_ns()
        for result in response.results:
            _events.setdefault("request_offsets", []).append(
                (response.correlation_id, int(result.base_offset)))
        _events.setdefault("acked", []).append((response.correlation_id, now))
        answer(self, response)

    def traced_open(self: Any) -> None:
        method = self._method
        if not getattr(method, "_traced", False):
            def wrapped(requests: Iterator[bytes]) -> Any:
                def took() -> Iterator[bytes]:
                    for index, payload in enumerate(requests):
                        _note("grpc_took", self._trace_order[index])
                        yield payload
                return method(took())
            wrapped._traced = True  # type: ignore[attr-defined]
            self._method = wrapped
        open_call(self)

    sender.Sender._send = traced_send  # type: ignore[method-assign,assignment]
    stream.ProduceStream.send = traced_stream_send  # type: ignore[method-assign]
    stream.ProduceStream._answer = traced_answer  # type: ignore[method-assign]
    stream.ProduceStream._open = traced_open  # type: ignore[method-assign]


def hook_broker() -> None:
    watch_gc()
    from logstore.broker import wakeups
    from logstore.server import service, wire

    parse = wire.parse_produce_request
    encode = wire.encode_subscribe_response
    on_append = wakeups.Wakeups.on_append

    def traced_parse(raw: Any) -> Any:
        request = parse(raw)
        _note("broker_read", request.correlation_id)
        return request

    def traced_encode(message: Any, records: Any) -> Any:
        _note("pushed", message.next_offset)
        return encode(message, records)

    def traced_on_append(self: Any, partition_log: Any) -> None:
        _note("appended", partition_log.log_end_offset)
        on_append(self, partition_log)

    wakeups_init = wakeups.Wakeups.__init__

    def traced_init(self: Any, loop: Any) -> None:
        wakeups_init(self, loop)
        start_watch(loop)

    wakeups.Wakeups.__init__ = traced_init  # type: ignore[method-assign]
    service.wire.parse_produce_request = traced_parse  # type: ignore[assignment]
    service.wire.encode_subscribe_response = traced_encode  # type: ignore[assignment]
    wakeups.Wakeups.on_append = traced_on_append  # type: ignore[method-assign]


def hook_consumer() -> None:
    watch_gc()
    from logstore.client import fetcher, subscription

    decode = subscription.wire.decode_subscribe_response
    store = fetcher.Fetcher._store

    def traced_decode(message: Any, topic: str, partition: int) -> Any:
        fetched, start = decode(message, topic, partition)
        _note("reader", fetched.next_offset)
        return fetched, start

    def traced_store(self: Any, accepted: Any) -> None:
        for _tp, fetched in accepted:
            _note("consumer", fetched.next_offset)
        store(self, accepted)

    subscription.wire.decode_subscribe_response = traced_decode  # type: ignore[assignment]
    fetcher.Fetcher._store = traced_store  # type: ignore[method-assign]


def serve_traced(argv: list[str]) -> int:
    """A ``logstore serve`` whose hooks write their events to $LOGSTORE_TRACE_EVENTS at exit."""
    hook_broker()
    path = os.environ[EVENTS_ENV]
    atexit.register(lambda: _dump(path))
    from logstore.cli.main import main

    profile_path = os.environ.get(PROFILE_ENV)
    if not profile_path:
        return main(argv)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(main, argv)
    finally:
        profiler.dump_stats(profile_path)


def context_switches(pid: int | None = None) -> int:
    """Voluntary context switches so far of every thread of process ``pid`` (default: this
    one): each is a thread going to sleep until woken, so they count the hops (preemptions by
    other processes, which grow with the load, are left out)."""
    total = 0
    task_dir = f"/proc/{pid or os.getpid()}/task"
    for task in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{task}/status", encoding="ascii") as file:
                for line in file:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            continue
    return total


def thread_switches() -> dict[str, int]:
    """Voluntary context switches so far of each Python thread of this process by name (the
    producer's sender, its stream reader, the caller; gRPC's two threads together)."""
    out: dict[str, int] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/status", encoding="ascii") as file:
                for line in file:
                    if line.startswith("voluntary_ctxt_switches"):
                        # gRPC's request and channel spin threads are unnamed ("Thread-N (_run)")
                        name = "gRPC's" if thread.name.startswith("Thread-") else thread.name
                        out[name] = out.get(name, 0) + int(line.split()[1])
        except OSError:
            continue
    return out


def _dump(path: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        json.dump({**_events, "stall_infos": _stall_infos()}, file)


# -- the workload -------------------------------------------------------------------------------


def _receive(spec: dict[str, Any], barrier: Any, answer: Any) -> None:
    if spec.get("own_session"):
        os.setsid()
    hook_consumer()
    start_watch()
    from bench.peers.records import read_stamp
    from logstore import Consumer

    total = spec["records"]
    sent = np.zeros(total, dtype=np.int64)
    polled = np.zeros(total, dtype=np.int64)
    offsets = np.zeros(total, dtype=np.int64)
    count = 0
    deadline = time.monotonic() + 60
    with Consumer(spec["server"], auto_offset_reset="earliest") as consumer:
        consumer.assign([(spec["topic"], 0)])
        consumer.position((spec["topic"], 0))
        barrier.wait()
        cpu_s, switches = time.process_time(), context_switches()
        while count < total and time.monotonic() < deadline:
            records = consumer.poll(timeout=0.5)
            now = time.time_ns()
            for record in records[: total - count]:
                sent[count] = read_stamp(record.value)
                polled[count] = now
                offsets[count] = record.offset
                count += 1
    answer.put({"consumer_cpu_s": time.process_time() - cpu_s,
                "consumer_switches": context_switches() - switches, "sent": sent[:count].tolist(), "poll": polled[:count].tolist(),
                "offsets": offsets[:count].tolist(), "events": _events,
                "stall_infos": _stall_infos()})


def run_rate(server: str, rate: int, seconds: float, options: dict[str, Any],
             server_pid: int, own_session: bool = False) -> dict[str, Any]:
    from bench.client import _process_cpu_s
    from bench.peers.logstore_runner import latency_send
    from logstore.client import Admin

    topic = f"trace-{uuid.uuid4().hex[:8]}"
    with Admin(server) as admin:
        admin.create_topic(topic, partitions=1, config={"flush": "never"})
    spec = {"server": server, "topic": topic, "records": int(rate * seconds), "rate": rate,
            "size": 100, "seed": 7, "options": options, "own_session": own_session}
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    answer = context.SimpleQueue()
    receiver = context.Process(target=_receive, args=(spec, barrier, answer), daemon=True)
    receiver.start()
    _events.clear()
    broker_cpu_s, own_cpu_s = _process_cpu_s(server_pid), time.process_time()
    broker_switches, own_switches = context_switches(server_pid), context_switches()
    own_threads: dict[str, int] = {}

    def start() -> None:  # the producer's threads exist now: latency_send is about to send
        _wait(barrier)
        own_threads.update(thread_switches())
    latency_send(spec, start)
    received = answer.get()
    received["broker_cpu_s"] = _process_cpu_s(server_pid) - broker_cpu_s
    received["producer_cpu_s"] = time.process_time() - own_cpu_s
    received["broker_switches"] = context_switches(server_pid) - broker_switches
    received["producer_switches"] = context_switches() - own_switches
    received["producer_threads"] = {name: count - own_threads.get(name, 0)
                                    for name, count in _at_close.items()}
    receiver.join(10)
    with Admin(server) as admin:
        admin.delete_topic(topic)
    return {"producer": {k: list(v) for k, v in _events.items()}, **received}


def _wait(barrier: Any) -> None:
    barrier.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_trace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--linger-ms", type=float, default=None)
    parser.add_argument("--late-factor", type=float, default=None,
                        help="client/hold.py's LATE_FACTOR for this run (1e9: plain Nagle)")
    parser.add_argument("--watch", type=float, default=0.0, metavar="MS",
                        help="a stall watchdog in every process: note stalls over MS ms and who"
                             " caused them (bench/stall_watch.py)")
    parser.add_argument("--sessions", choices=("one", "own"), default="own",
                        help="own (default): the broker and the consumer each run in a session"
                             " of their own, as separate programs do (the kernel's autogroups"
                             " share the cores per session); one: all in this one")
    parser.add_argument("--slowest", type=int, default=0, metavar="N",
                        help="also print the steps of the N slowest requests' records")
    parser.add_argument("--checkpoint-ms", type=int, default=None, metavar="MS",
                        help="the broker's [maintenance] checkpoint_interval_ms (default 10,000:"
                             " a short one shows what the periodic checkpoint costs the tail)")
    parser.add_argument("--floor-rate", type=int, default=200,
                        help="the raw gRPC relay's rate (bench/raw_relay.py; 0: skip it)")
    args = parser.parse_args(argv)
    if args.late_factor is not None:
        from logstore.client import hold

        hold.LATE_FACTOR = args.late_factor
    if args.watch:
        os.environ[WATCH_ENV] = str(args.watch)
    hook_producer()
    start_watch()
    directory = tempfile.mkdtemp(prefix="logstore-trace-")
    events_path = os.path.join(directory, "broker-events.json")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    code = ("import sys; from bench.latency_trace import serve_traced; "
            "sys.exit(serve_traced(sys.argv[1:]))")
    extra: list[str] = []
    if args.checkpoint_ms is not None:
        config_path = os.path.join(directory, "logstore.toml")
        with open(config_path, "w", encoding="ascii") as file:
            file.write(f"[maintenance]\ncheckpoint_interval_ms = {args.checkpoint_ms}\n")
        extra = ["--config", config_path]
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--data-dir", os.path.join(directory, "data"),
         "--listen", address, "--metrics-listen", "", "--log-level", "warning", *extra],
        env={**os.environ, EVENTS_ENV: events_path}, start_new_session=args.sessions == "own",
    )
    options = {} if args.linger_ms is None else {"linger_ms": args.linger_ms}
    runs: list[tuple[int, dict[str, Any]]] = []
    try:
        _wait_up(address)
        for rate in args.rate:
            runs.append((rate, run_rate(address, rate, args.seconds, options, process.pid,
                                        args.sessions == "own")))
    finally:
        process.terminate()
        process.wait(30)
    with open(events_path, encoding="ascii") as file:
        broker_events: dict[str, list[tuple[int, int]]] = json.load(file)
    broker_stalls: list[dict[str, Any]] = broker_events.pop("stall_infos", [])  # type: ignore[assignment]
    producer_stalls = _stall_infos()
    shutil.rmtree(directory, ignore_errors=True)
    # the broker's events of all runs are in one file: split them by time
    for rate, run in runs:
        start, end = min(run["sent"]), max(run["poll"])
        window = {name: [(k, t) for k, t in items if start <= t <= end]
                  for name, items in broker_events.items()}
        hops = hop_times(run, window)
        print(report(rate, hops, len(run["sent"]) // 5, run, window))
        if args.slowest:
            print(slowest_report(hops, len(run["sent"]) // 5, args.slowest))
        if args.watch:
            print(stall_report(hops, len(run["sent"]) // 5, {
                "producer": producer_stalls, "broker": broker_stalls,
                "consumer": run["stall_infos"]}))
    if args.floor_rate > 0:
        from bench.raw_relay import RelayServer, measure

        relay = RelayServer()
        try:
            floor = measure(relay.address, args.floor_rate, args.seconds)
        finally:
            relay.close()
        for reader, result in floor.items():
            print(f"the floor, a raw gRPC relay, one message per record at {args.floor_rate:,}/s,"
                  f" {reader}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms,"
                  f" {result['switches']:.1f} voluntary context switches per message")
    print(f"(load average {os.getloadavg()[0]:.2f}; the hooks add a few µs per hop)")
    return 0


def _wait_up(address: str, timeout_s: float = 30.0) -> None:
    from logstore.client import Admin

    deadline = time.monotonic() + timeout_s
    with Admin(address, timeout=1.0) as admin:
        while True:
            try:
                admin.list_topics()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
