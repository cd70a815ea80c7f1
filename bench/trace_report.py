"""The tables of ``bench/latency_trace.py``: per record, the time of each hop from the three
processes' events, and the reports made of them (hops, collections, stalls, the slowest records)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _first_end_above(events: list[tuple[int, int]], offsets: np.ndarray) -> np.ndarray:
    """For each offset, the time of the first event whose end offset (exclusive) is above it."""
    if not events:
        return np.zeros(len(offsets), dtype=np.int64)
    ends = np.array([e for e, _ in events], dtype=np.int64)
    times = np.array([t for _, t in events], dtype=np.int64)
    order = np.argsort(ends, kind="stable")
    ends, times = ends[order], times[order]
    index = np.searchsorted(ends, offsets, side="right")
    index = np.minimum(index, len(ends) - 1)
    return np.asarray(times[index])


def hop_times(run: dict[str, Any], broker: dict[str, list[tuple[int, int]]]) -> dict[str, np.ndarray]:
    """Per record (in offset order), the time of each hop."""
    offsets = np.asarray(run["offsets"], dtype=np.int64)
    producer = run["producer"]
    # a request's first offset, from its answer: its hops apply to offsets from there on
    base = dict(producer.get("request_offsets", []))
    starts = sorted((offset, cid) for cid, offset in base.items() if offset >= 0)
    first = np.array([offset for offset, _ in starts], dtype=np.int64)
    cids = np.array([cid for _, cid in starts], dtype=np.int64)
    record_cid = cids[np.maximum(np.searchsorted(first, offsets, side="right") - 1, 0)]
    hops: dict[str, np.ndarray] = {"send": np.asarray(run["sent"], dtype=np.int64)}
    for name in ("sender", "queued", "grpc_took"):
        by_cid = dict(producer.get(name, []))
        hops[name] = np.array([by_cid.get(int(c), 0) for c in record_cid], dtype=np.int64)
    by_cid = dict(broker.get("broker_read", []))
    hops["broker_read"] = np.array([by_cid.get(int(c), 0) for c in record_cid], dtype=np.int64)
    hops["appended"] = _first_end_above(broker.get("appended", []), offsets)
    hops["pushed"] = _first_end_above(broker.get("pushed", []), offsets)
    events = run["events"]
    hops["reader"] = _first_end_above(events.get("reader", []), offsets)
    hops["consumer"] = _first_end_above(events.get("consumer", []), offsets)
    hops["poll"] = np.asarray(run["poll"], dtype=np.int64)
    by_cid = dict(producer.get("acked", []))
    hops["acked"] = np.array([by_cid.get(int(c), 0) for c in record_cid], dtype=np.int64)
    silent = [name for name, times in hops.items() if not times.any()]
    if silent:  # the hooks patch private names: a rename must not print zeros as timings
        raise RuntimeError(f"no events from the hooks of {', '.join(silent)}: did what they patch move?")
    return hops


def gc_summary(processes: dict[str, dict[str, list[tuple[int, int]]]], sent: np.ndarray,
               polled: np.ndarray) -> str:
    """Per process: cyclic collections per generation while the measured records travelled,
    the longest pause, and the share of the slowest 1 % of records whose way (send() to poll())
    overlapped a pause of that process."""
    start, end = int(sent.min()), int(polled.max())
    latency = polled - sent
    slow = latency >= np.percentile(latency, 99)
    parts = []
    for who, events in processes.items():
        pauses = [(d, t) for g in range(3) for d, t in events.get(f"gc{g}", [])
                  if start <= t <= end]
        counts = "/".join(str(sum(1 for d, t in events.get(f"gc{g}", []) if start <= t <= end))
                          for g in range(3))
        longest = max((d for d, _ in pauses), default=0) / 1e6
        hit = np.zeros(len(sent), dtype=bool)
        for duration, begin in pauses:
            if duration > 1_000_000:  # only pauses over 1 ms can own a 2 ms tail
                hit |= (sent <= begin + duration) & (polled >= begin)
        parts.append(f"{who} {counts} (max {longest:.2f} ms; slowest 1 % overlapping a pause"
                     f" over 1 ms: {hit[slow].mean():.0%})")
    return "  GC gen0/1/2: " + "; ".join(parts)


def report(rate: int, hops: dict[str, np.ndarray], settle: int, run: dict[str, Any],
           broker: dict[str, list[tuple[int, int]]] | None = None) -> str:
    sent = hops["send"][settle:]
    requests = len(run["producer"].get("queued", []))
    records = len(run["sent"])
    cpu = "  ".join(f"{who} {run[f'{who}_cpu_s'] / records * 1e6:.0f}"
                    for who in ("producer", "broker", "consumer"))
    pushes = max(len(run["events"].get("consumer", [])), 1)
    switches = (f"producer {run['producer_switches'] / max(requests, 1):.1f}, broker"
                f" {run['broker_switches'] / max(requests, 1):.1f} per request; consumer"
                f" {run['consumer_switches'] / pushes:.1f} per pushed message")
    threads = ", ".join(f"{name} {count / max(records, 1) * 1000:.0f}"
                        for name, count in sorted(run.get("producer_threads", {}).items())
                        if count and name not in ("stall-watch",))
    lines = [f"at {rate:,} rec/s, {len(sent):,} records (after the first {settle:,}),"
             f" {records / max(requests, 1):.1f} records per request;"
             f" CPU µs per record: {cpu}",
             f"  voluntary context switches: {switches}",
             f"  the producer's threads, voluntary switches per 1,000 records: {threads}",
             f"  {'hop':<12} {'since send() p50':>17} {'p99':>8} {'step p50':>9} {'p99':>8}  (ms)"]
    previous = sent
    for name in ("sender", "queued", "grpc_took", "broker_read", "appended", "pushed", "reader",
                 "consumer", "poll", "acked"):
        times = hops[name][settle:]
        since = (times - sent) / 1e6
        step = (times - previous) / 1e6
        lines.append(f"  {name:<12} {np.percentile(since, 50):17.3f} {np.percentile(since, 99):8.3f}"
                     f" {np.percentile(step, 50):9.3f} {np.percentile(step, 99):8.3f}")
        if name != "poll":
            previous = times
        else:
            previous = sent  # acked is measured from send(), beside poll
    lines.append(gc_summary({"producer": run["producer"], "broker": broker or {},
                             "consumer": run["events"]}, sent, hops["poll"][settle:]))
    # Nagle: a record sent while an earlier request was unanswered waits for its answer
    held = _held_behind_request(hops)[settle:]
    step = (hops["sender"][settle:] - sent) / 1e6
    if held.any():
        direct = len(run["producer"].get("direct", []))
        lines.append(f"  {held.mean():.0%} of records found a request in flight; their send()->sender"
                     f" p50 {np.percentile(step[held], 50):.3f} ms, the others'"
                     f" {np.percentile(step[~held], 50) if (~held).any() else 0:.3f} ms;"
                     f" {direct / max(requests, 1):.0%} of requests sent by send()'s own thread, without waking the sender thread")
    return "\n".join(lines)


def slowest_report(hops: dict[str, np.ndarray], settle: int, count: int) -> str:
    """The steps (ms) of the slowest record of each of the ``count`` slowest requests, so a
    stall shows the hop it sat in."""
    sent = hops["send"][settle:]
    latency = hops["poll"][settle:] - sent
    sender = hops["sender"][settle:]
    order = np.argsort(-latency, kind="stable")
    seen: set[int] = set()
    names = ("sender", "queued", "grpc_took", "broker_read", "appended", "pushed", "reader",
             "consumer", "poll")
    lines = ["  the slowest records' steps (ms): " + " ".join(f"{n:>8}" for n in names)
             + "    acked   at (s)"]
    for index in order:
        if int(sender[index]) in seen:
            continue
        seen.add(int(sender[index]))
        previous = int(sent[index])
        steps = []
        for name in names:
            now = int(hops[name][settle + index])
            steps.append((now - previous) / 1e6)
            previous = now
        acked = (int(hops["acked"][settle + index]) - int(sent[index])) / 1e6
        lines.append(f"  {latency[index] / 1e6:30.1f}  " + " ".join(f"{s:8.2f}" for s in steps)
                     + f" {acked:8.2f} {(int(sent[index]) - int(sent.min())) / 1e9:8.3f}")
        if len(seen) >= count:
            break
    return "\n".join(lines)


def stall_report(hops: dict[str, np.ndarray], settle: int,
                 processes: dict[str, list[dict[str, Any]]]) -> str:
    """Per process, its stalls while the measured records travelled and what they were, and
    the share of the slowest 1 % of records whose way overlapped one."""
    from bench.stall_watch import summary

    sent, polled = hops["send"][settle:], hops["poll"][settle:]
    start, end = int(sent.min()), int(polled.max())
    latency = polled - sent
    slow = latency >= np.percentile(latency, 99)
    lines = [f"  stalls (watchdog; the slowest 1 %: {np.percentile(latency, 99) / 1e6:.2f} ms and"
             " over):"]
    hit_any = np.zeros(len(sent), dtype=bool)
    for who, infos in processes.items():
        lines += summary(who, infos, start, end)
        hit = np.zeros(len(sent), dtype=bool)
        for info in infos:
            length = int(info.get("late_ms", info.get("loop_ms", 0)) * 1e6)
            hit |= (sent <= info["at_ns"] + length) & (polled >= info["at_ns"])
        hit_any |= hit
        lines.append(f"    slowest 1 % overlapping a {who} stall: {hit[slow].mean():.0%}")
    lines.append(f"  slowest 1 % overlapping any stall: {hit_any[slow].mean():.0%}")
    return "\n".join(lines)


def _held_behind_request(hops: dict[str, np.ndarray]) -> np.ndarray:
    """Per record: was the request before its own still unanswered when it was sent?"""
    acked, sender = hops["acked"], hops["sender"]
    requests = np.unique(sender)
    acks = np.array([acked[sender == s].max() for s in requests])
    index = np.searchsorted(requests, sender) - 1  # the request before the record's own
    previous_ack = np.where(index >= 0, acks[np.maximum(index, 0)], 0)
    return np.asarray(hops["send"] < previous_ack)
