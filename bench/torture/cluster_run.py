"""``scripts/torture --cluster`` (``python -m bench.torture.cluster_run``): the torture run on a
real cluster — 3 etcd members and 3 brokers on loopback (``bench.torture.cluster``).

Phases: start etcd and the brokers; create the topic (``--partitions``, factor 3,
``min_insync_replicas`` 2); start the readers (explicit assignment, positions of their own;
with ``--groups`` also members of a consumer group; with ``--transactions`` a transactional
producer on a second topic and a read_committed group reading it), then the idempotent
``acks=all`` producers, all with every broker as bootstrap; ``--faults`` faults over about ``--seconds``
(``bench.torture.cluster_nemesis``); heal and wait for full ISRs; stop the producers; let the
readers (and the group) read to the high watermarks; replay every partition once from offset 0
with a fresh consumer; stop everything and compare the replicas on disk
(``bench.torture.convergence``); check the merged history (``bench.torture.checker``). Exits 1
on any anomaly (a replica divergence included), a worker crash, a broker or etcd member that
did not come back, or readers that did not reach the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.torture.__main__ import (
    GROUP,
    RC_GROUP,
    TXN_TOPIC,
    Run,
    Worker,
    add_run_options,
    finish,
    print_outcome,
    progress,
)
from bench.torture.checker import Report
from bench.torture.cluster import LocalCluster
from bench.torture.cluster_nemesis import KINDS, ClusterNemesis
from bench.torture.convergence import divergences
from bench.torture.workload import History, write_reads

TOPIC = "torture"
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
#: The nemesis waits at least this long (a random time in the range) between two faults.
MIN_UPTIME_S = (0.3, 1.5)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/torture --cluster",
        description="The torture run on a local cluster (etcd members + brokers on loopback): "
                    "SIGKILL, SIGSTOP and nftables-isolate brokers (the controller too) and "
                    "kill etcd members under idempotent acks=all producers and readers; check "
                    "for lost acknowledged writes, duplicates, inconsistent offsets, "
                    "non-monotonic reads, phantom reads and diverging replicas. Exits 1 on any "
                    "anomaly.")
    parser.add_argument("--brokers", type=int, default=3, help="brokers (3)")
    parser.add_argument("--etcd", type=int, default=3, help="etcd members (3)")
    parser.add_argument("--faults", type=int, default=10, metavar="N", help="faults injected (10)")
    parser.add_argument("--seconds", type=float, default=60.0, metavar="S",
                        help="about how long the fault phase lasts (60); each fault waits for "
                             "the cluster to recover, so many faults take longer")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="fault kinds to draw from (all)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic (4)")
    parser.add_argument("--producers", type=int, default=3, help="idempotent producers (3)")
    parser.add_argument("--readers", type=int, default=2,
                        help="readers by explicit assignment, each reading every partition (2)")
    parser.add_argument("--groups", action="store_true",
                        help="also run --consumers members of a consumer group (subscribe, "
                             "commit) and wait for its committed offsets in the drain phase")
    parser.add_argument("--consumers", type=int, default=2, help="group members with --groups (2)")
    parser.add_argument("--transactions", action="store_true",
                        help="also run a transactional producer (topic torture-txn, factor 3) "
                             "and a read_committed group of 2 reading it; check aborted reads "
                             "and that committed transactions are read whole")
    parser.add_argument("--rate", type=float, default=200.0, help="records/s per producer (200)")
    parser.add_argument("--flush", choices=["always", "never"], default="never",
                        help="the topic's flush policy (default never: replication keeps it)")
    add_run_options(parser, "readers")
    options = parser.parse_args(argv)
    if options.brokers < REPLICATION_FACTOR or not 1 <= options.etcd <= 9 or options.faults < 0:
        parser.error(f"--brokers must be >= {REPLICATION_FACTOR}, --etcd 1..9, --faults >= 0")
    if options.etcd < 3 and "etcd_kill" in options.kinds:
        options.kinds = [k for k in options.kinds if k != "etcd_kill"]  # no quorum to keep
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(1 << 31)
    return options


class ClusterRun(Run):
    """The single-broker ``Run``'s worker handling, with a cluster instead of one broker."""

    def __init__(self, options: argparse.Namespace) -> None:
        options.work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="logstore-ctorture-"))
        transactions = options.transactions
        options.transactions = False  # (the single broker's Run sets no topics up for it)
        super().__init__(options)
        options.transactions = transactions
        self.topics = [TOPIC]
        self.cluster = LocalCluster(self.work_dir, options.brokers, options.etcd)
        self.faults = ClusterNemesis(self.cluster, self.nemesis, self.rng, TOPIC, options.kinds)
        self.divergences: list[dict[str, Any]] = []
        self.readers_at: dict[str, dict[tuple[str, int], int]] = {}
        self._read_at: dict[Path, int] = {}

    @property
    def server(self) -> str:
        return self.cluster.bootstrap

    def kill_everything(self) -> None:
        super().kill_everything()
        self.cluster.close()

    def setup(self) -> None:
        from logstore.client import Admin

        options = self.options
        self.cluster.start()
        deadline = time.monotonic() + 60.0
        while not self.faults.formed():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form within 60 s")
            time.sleep(0.2)
        config = {"flush": options.flush, "min_insync_replicas": str(MIN_INSYNC_REPLICAS)}
        with Admin(self.server, timeout=30.0) as admin:
            for topic in [TOPIC] + ([TXN_TOPIC] if options.transactions else []):
                admin.create_topic(topic, options.partitions, config=config,
                                   replication_factor=REPLICATION_FACTOR)
        if not self.faults.wait_recovered(60.0):
            raise RuntimeError("the topic's partitions got no leader and full ISR in 60 s")
        self.faults.figures.recovery_seconds.clear()
        self.faults.figures.not_recovered = 0
        self.nemesis.write("meta", flush=options.flush, seed=options.seed, faults=options.faults,
                           seconds=options.seconds, topics=self.topics, cluster=True,
                           partitions=options.partitions, brokers=options.brokers,
                           etcd=options.etcd, groups=options.groups, transactions=options.transactions)
        for index in range(options.readers):
            self.spawn("reader", f"r{index}", "--topics", TOPIC)
        if options.groups:
            for index in range(options.consumers):
                self.spawn("consumer", f"c{index}", "--group", GROUP, "--topics", TOPIC)
        if options.transactions:
            for index in range(2):
                self.spawn("consumer", f"rc{index}", "--group", RC_GROUP, "--topics", TXN_TOPIC,
                           "--isolation", "read_committed")
        if options.groups or options.transactions:
            time.sleep(2.0)  # let the groups form before the records come
        for index in range(options.producers):
            self.spawn("producer", f"p{index}", "--topic", TOPIC, "--rate", str(options.rate))
        if options.transactions:
            self.spawn("txn-producer", "t0", "--topic", TXN_TOPIC)

    def torment(self) -> None:
        options = self.options
        started = time.monotonic()
        end = started + options.seconds
        done = 0
        while done < options.faults:
            share = max(0.0, end - time.monotonic()) / (options.faults - done)
            time.sleep(max(self.rng.uniform(*MIN_UPTIME_S), self.rng.uniform(0.2, 1.0) * share))
            self.check_workers()
            kind = self.faults.fault()
            done += 1
            self.faults.wait_recovered()
            progress(f"{done}/{options.faults} faults (last: {kind}), "
                     f"{time.monotonic() - started:.0f} s")
        if options.faults == 0:
            time.sleep(options.seconds)
        self.figures.nemesis_seconds = time.monotonic() - started

    def heal(self) -> None:
        self.faults.heal()
        if not self.faults.wait_recovered(60.0):
            raise RuntimeError("after healing, not every partition got a full ISR within 60 s")
        self.nemesis.write("healed")

    def end_offsets(self) -> dict[tuple[str, int], int]:
        from logstore.client import Admin

        with Admin(self.server, timeout=10.0) as admin:
            ends = admin.list_offsets([(TOPIC, p) for p in range(self.options.partitions)])
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    def reader_positions(self, worker: Worker) -> dict[tuple[str, int], int]:
        """The positions a reader last wrote down (its history read incrementally)."""
        at = self.readers_at.setdefault(worker.name, {})
        start = self._read_at.get(worker.history, 0)
        with open(worker.history, "rb") as file:
            file.seek(start)
            data = file.read()
        whole = data[: data.rfind(b"\n") + 1]
        self._read_at[worker.history] = start + len(whole)
        for line in whole.splitlines():
            if b'"positions"' in line:
                event = json.loads(line)
                if event.get("type") == "positions":
                    at.update({(t, p): o for t, p, o in event["positions"]})
        return at

    def drain(self) -> None:
        """Wait until every reader (and with ``--groups`` the group's commits) reached the
        high watermark of every partition."""
        from logstore.client import Admin
        from logstore.errors import LogstoreError

        started = time.monotonic()
        deadline = started + self.options.drain_seconds
        readers = [w for w in self.workers if w.role == "reader"]
        while time.monotonic() < deadline:
            try:
                ends = self.end_offsets()
                done = all(self.reader_positions(w).get(tp, 0) >= end
                           for w in readers for tp, end in ends.items())
                if done and (self.options.groups or self.options.transactions):
                    with Admin(self.server, timeout=10.0) as admin:
                        done = ((not self.options.groups or self._drained(admin, GROUP, self.topics, False))
                                and (not self.options.transactions
                                     or self._drained(admin, RC_GROUP, [TXN_TOPIC], True)))
                if done:
                    self.figures.drained = True
                    break
            except LogstoreError:
                pass
            time.sleep(0.5)
        self.figures.drain_seconds = time.monotonic() - started
        self.nemesis.write("drained", drained=self.figures.drained)

    def replay(self) -> None:
        """Read every partition once more from offset 0 to its high watermark, with a fresh
        consumer: its reads enter the history as group ``replay``."""
        from logstore.client import Consumer

        ends = self.end_offsets()
        history = History(str(self.history_dir / "replay.jsonl"), "replay")
        deadline = time.monotonic() + self.options.drain_seconds
        try:
            with Consumer(self.server, auto_offset_reset="earliest", retries=10,
                          max_poll_records=1_000_000) as consumer:
                consumer.assign(TOPIC)
                at: dict[tuple[str, int], int] = {}
                since = time.monotonic()
                while any(at.get(tp, 0) < end for tp, end in ends.items()):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the replay did not reach the high watermarks")
                    started = time.monotonic()
                    read = write_reads(history, "replay", consumer.poll(timeout=0.5), since)
                    at.update({(tp.topic, tp.partition): offset for tp, offset in read.items()})
                    since = started
        finally:
            history.close()

    def compare_replicas(self) -> None:
        """Stop every broker (leaving etcd up), then compare each partition's replicas."""
        description = self.faults.describe()
        if description is None:
            raise RuntimeError("no broker answered describe_cluster before the comparison")
        replicas = {p.partition: p.replicas for p in description.partitions if p.topic == TOPIC}
        ends = self.end_offsets()
        hws = {partition: offset for (_, partition), offset in ends.items()}
        for broker in self.cluster.brokers.values():  # all at once: their shutdowns overlap
            broker.terminate()
        codes = [broker.wait_stopped(30.0) for broker in self.cluster.brokers.values()]
        self.figures.broker_exit_code = next((c for c in codes if c not in (0, None)), codes[0])
        data_dirs = {b: broker.data_dir for b, broker in self.cluster.brokers.items()}
        self.divergences = divergences(data_dirs, TOPIC, replicas, hws)
        self.nemesis.write("compared", divergences=self.divergences)

    def execute(self) -> tuple[dict[str, Any], Report]:
        try:
            self.setup()
            progress(f"work directory {self.work_dir}; brokers at {self.server}")
            self.torment()
            self.heal()
            progress("healed; stopping the producers")
            self.stop_workers([w for w in self.workers if w.role in ("producer", "txn-producer")],
                              timeout=240)
            progress("draining the readers")
            self.drain()
            self.stop_workers([w for w in self.workers if w.role not in ("producer", "txn-producer")],
                              timeout=60)
            progress("replaying every partition")
            self.replay()
            progress("comparing the replicas")
            self.compare_replicas()
            progress("checking the history")
        except Exception as exc:  # a process did not come back, say: check what there is
            self.figures.aborted = f"{type(exc).__name__}: {exc}"
            progress(f"run aborted ({self.figures.aborted}); checking the history so far")
        finally:
            self.kill_everything()
            self.nemesis.close()
        report, history, crashes = self.check_history()
        for divergence in self.divergences:
            report.add("replica_divergence", divergence)
        summary = {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.options).items()},
            "faults": self.faults.figures.to_json(),
            "run": {"nemesis_seconds": round(self.figures.nemesis_seconds, 1),
                    "drained": self.figures.drained,
                    "drain_seconds": round(self.figures.drain_seconds, 1),
                    "broker_exit_code": self.figures.broker_exit_code,
                    "worker_problems": self.figures.worker_problems,
                    "aborted": self.figures.aborted},
            "crashes": crashes,
            **report.to_json(),
            "work_dir": str(self.work_dir),
            "history": str(history),
        }
        return summary, report


def failed(summary: dict[str, Any], report: Report) -> bool:
    run = summary["run"]
    return bool(report.anomalies or summary["crashes"] or summary["faults"]["restarts_failed"]
                or run["aborted"] or run["worker_problems"] or not run["drained"]
                or run["broker_exit_code"] not in (0, None))


def print_summary(summary: dict[str, Any], report: Report) -> None:
    faults, run, options = summary["faults"], summary["run"], summary["options"]
    print(f"torture --cluster: seed {options['seed']}, {options['brokers']} brokers, "
          f"{options['etcd']} etcd members, {options['partitions']} partitions (factor "
          f"{REPLICATION_FACTOR}, min_insync_replicas {MIN_INSYNC_REPLICAS}), "
          f"{options['producers']} producers, {options['readers']} readers"
          + (f", a group of {options['consumers']}" if options["groups"] else "")
          + (", transactions" if options.get("transactions") else ""))
    kinds = ", ".join(f"{count} {kind}" for kind, count in faults["by_kind"].items())
    print(f"faults: {faults['faults']} ({kinds}); {faults['controller_targeted']} on the "
          f"controller, {faults['etcd_leader_targeted']} on the etcd leader; "
          f"{faults['restarts_failed']} failed restarts, {faults['not_recovered']} slow "
          f"recoveries; recovery median {faults['recovery_seconds_median']} s, max "
          f"{faults['recovery_seconds_max']} s; in {run['nemesis_seconds']} s")
    print_outcome(run, summary, report)
    print(f"torture --cluster: {'FAILED' if failed(summary, report) else 'OK'}: "
          f"{report.anomalies} anomalies, {summary['figures']['acknowledged']} acknowledged")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    given_work_dir = bool(options.work_dir)
    return finish(ClusterRun(options), failed, print_summary, given_work_dir=given_work_dir)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
