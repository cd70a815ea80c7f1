"""``python -m bench.torture`` (``scripts/torture``): the torture run. See ``bench/torture``.

Phases: start a broker and the topics; start the consumers, then the producers (each a process
of its own, writing its history); the nemesis kills or pauses the broker ``--kills`` times over
about ``--seconds`` (damaging unsynced segment tails after kills with ``--page-cache-loss``);
heal (the broker runs again); stop the producers (each waits for its answers); let the
consumers drain to the end offsets; stop them and the broker; merge the histories and check
them. Prints the nemesis's figures and the checker's counts; exits 1 on any anomaly, a worker
crash, or a broker that did not come back.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.paths import folder, output_file
from bench.torture.broker import REPO_ROOT, Broker, recovery_reports
from bench.torture.checker import Report, check, read_history
from bench.torture.nemesis import AcknowledgedEnds, damage_partition, partition_dirs
from bench.torture.workload import History

TOPIC = "torture"
TXN_TOPIC = "torture-txn"
GROUP = "torture-ru"
RC_GROUP = "torture-rc"
#: Share of faults that are pauses (SIGSTOP, then SIGCONT or SIGKILL) instead of plain kills.
PAUSE_SHARE = 0.25
#: Share of pauses that end in a kill rather than SIGCONT.
KILL_WHILE_PAUSED = 0.3
#: The broker runs at least this long (a random time in the range) between two faults.
MIN_UPTIME_S = (0.5, 2.5)
#: How long the nemesis waits after a kill before reading the producers' histories.
SETTLE_S = 1.0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/torture",
        description="Kill, pause and restart a real broker under idempotent producers and "
                    "group consumers; check the history for lost writes, duplicates, "
                    "inconsistent offsets, non-monotonic polls, skipped offsets and aborted "
                    "reads. Exits 1 on any anomaly.")
    parser.add_argument("--kills", type=int, default=10, metavar="N",
                        help="SIGKILLs of the broker (default 10)")
    parser.add_argument("--seconds", type=float, default=60.0, metavar="S",
                        help="about how long the nemesis phase lasts (default 60)")
    parser.add_argument("--producers", type=int, default=3, help="idempotent producers (3)")
    parser.add_argument("--consumers", type=int, default=3,
                        help="members of the read_uncommitted group (3)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="records/s per producer (300)")
    parser.add_argument("--transactions", action="store_true",
                        help="add a transactional producer and a read_committed group "
                             "(2 members); check aborted reads")
    parser.add_argument("--page-cache-loss", action="store_true",
                        help="after each kill, damage the unsynced tail of segment files")
    parser.add_argument("--flush", choices=["always", "never"], default="always",
                        help="the topics' flush policy (default always)")
    parser.add_argument("--segment-bytes", type=int, default=256 << 10,
                        help="the topics' segment_bytes (default 256 KiB: segments roll)")
    add_run_options(parser, "consumers")
    parser.add_argument("--cluster", action="store_true",
                        help="run on a local cluster instead: 3 etcd members and 3 brokers on "
                             "loopback, brokers killed, paused and isolated (the controller too), "
                             "etcd members killed; its options: scripts/torture --cluster --help")
    options = parser.parse_args(argv)
    if options.kills < 0 or options.seconds <= 0 or options.partitions < 1:
        parser.error("--kills must be >= 0, --seconds > 0, --partitions >= 1")
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(1 << 31)
    return options


def add_run_options(parser: argparse.ArgumentParser, readers: str) -> None:
    """The options every torture run has: the drain, where results go, the seed."""
    parser.add_argument("--drain-seconds", type=float, default=90.0,
                        help=f"how long the {readers} get to read to the end (90)")
    parser.add_argument("--history", metavar="FILE", type=output_file,
                        help="write the merged history here (default: WORK_DIR/history.jsonl)")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="write the summary as JSON")
    parser.add_argument("--work-dir", metavar="DIR", type=folder,
                        help="data, logs and histories (default: a new temporary directory, "
                             "removed after a clean run)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


@dataclass
class Worker:
    name: str
    role: str
    history: Path
    process: subprocess.Popen[bytes]
    exit_code: int | None = None


@dataclass
class Figures:
    kills: int = 0
    kills_survived: int = 0
    pauses: int = 0
    kills_while_paused: int = 0
    restarts_failed: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)
    recovery_reports: list[dict[str, Any]] = field(default_factory=list)
    #: Damage with zeros or junk after which the broker's recovery reported no cut.
    unreported_cuts: list[dict[str, Any]] = field(default_factory=list)
    nemesis_seconds: float = 0.0
    drained: bool = False
    drain_seconds: float = 0.0
    broker_exit_code: int | None = None
    worker_problems: list[str] = field(default_factory=list)
    #: Why the run stopped early (None: it did not).
    aborted: str | None = None

    def to_json(self) -> dict[str, Any]:
        restarts = self.restart_seconds
        return {
            "kills": self.kills,
            "kills_survived": self.kills_survived,
            "pauses": self.pauses,
            "kills_while_paused": self.kills_while_paused,
            "restarts_failed": self.restarts_failed,
            "restart_seconds_median": statistics.median(restarts) if restarts else None,
            "restart_seconds_max": max(restarts) if restarts else None,
            "page_cache_cuts": len(self.cuts),
            "page_cache_cut_actions": {a: sum(c["action"] == a for c in self.cuts)
                                       for a in ("truncate", "zero", "garble")},
            "recovery_reports": len(self.recovery_reports),
            "unreported_cuts": self.unreported_cuts,
            "nemesis_seconds": round(self.nemesis_seconds, 1),
            "drained": self.drained,
            "drain_seconds": round(self.drain_seconds, 1),
            "broker_exit_code": self.broker_exit_code,
            "worker_problems": self.worker_problems,
            "aborted": self.aborted,
        }


class Run:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.work_dir = Path(options.work_dir or tempfile.mkdtemp(prefix="logstore-torture-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.history_dir = self.work_dir / "history"
        self.history_dir.mkdir(exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        self.broker = Broker(self.work_dir / "data", self.work_dir / "broker.log")
        self.nemesis = History(str(self.history_dir / "nemesis.jsonl"), "nemesis")
        self.workers: list[Worker] = []
        self.figures = Figures()
        self.topics = [TOPIC] + ([TXN_TOPIC] if options.transactions else [])
        self._log_read = 0
        self._pending_cuts: list[dict[str, Any]] = []

    # -- processes -------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        """The address the workers connect to."""
        return self.broker.address

    def spawn(self, role: str, name: str, *args: str) -> Worker:
        history = self.history_dir / f"{name}.jsonl"
        with open(self.work_dir / "logs" / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.torture.workload", role,
                 "--server", self.server, "--name", name, "--history", str(history),
                 "--seed", str(self.rng.randrange(1 << 31)), *args],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), start_new_session=True,
            )
        worker = Worker(name, role, history, process)
        self.workers.append(worker)
        return worker

    def stop_workers(self, workers: list[Worker], timeout: float) -> None:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.exit_code = worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
                self.figures.worker_problems.append(
                    f"{worker.name} did not stop within {timeout:.0f} s (killed)")
                continue
            if worker.exit_code != 0:
                self.figures.worker_problems.append(
                    f"{worker.name} exited with {worker.exit_code} (see logs/{worker.name}.log)")

    def check_workers(self) -> None:
        for worker in self.workers:
            if worker.exit_code is None and worker.process.poll() is not None:
                worker.exit_code = worker.process.returncode
                self.figures.worker_problems.append(
                    f"{worker.name} died with {worker.exit_code} during the run "
                    f"(see logs/{worker.name}.log)")

    def kill_everything(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        self.broker.kill()

    # -- phases ----------------------------------------------------------------------------------

    def setup(self) -> None:
        from logstore.client import Admin

        options = self.options
        self.broker.start()
        config = {"flush": options.flush, "segment_bytes": str(options.segment_bytes)}
        with Admin(self.broker.address) as admin:
            for topic in self.topics:
                admin.create_topic(topic, options.partitions, config=config)
        self.nemesis.write("meta", flush=options.flush, seed=options.seed, kills=options.kills,
                           seconds=options.seconds, topics=self.topics,
                           partitions=options.partitions, page_cache_loss=options.page_cache_loss,
                           transactions=options.transactions)
        for index in range(options.consumers):
            self.spawn("consumer", f"c{index}", "--group", GROUP, "--topics", *self.topics)
        if options.transactions:
            for index in range(2):
                self.spawn("consumer", f"r{index}", "--group", RC_GROUP, "--topics", TXN_TOPIC,
                           "--isolation", "read_committed")
        time.sleep(2.0)  # let the groups form before the records come
        for index in range(options.producers):
            self.spawn("producer", f"p{index}", "--topic", TOPIC, "--rate", str(options.rate))
        if options.transactions:
            self.spawn("txn-producer", "t0", "--topic", TXN_TOPIC)
        self.acknowledged = AcknowledgedEnds(
            [w.history for w in self.workers if w.role in ("producer", "txn-producer")])

    def restart(self) -> None:
        """Start the broker again (after a kill); a failure is noted and retried once."""
        for attempt in (1, 2):
            try:
                seconds = self.broker.start()
            except RuntimeError as exc:
                self.figures.restarts_failed += 1
                self.nemesis.write("start_failed", attempt=attempt, error=str(exc)[:500])
                self.broker.kill()
                continue
            self.figures.restart_seconds.append(seconds)
            reports, self._log_read = recovery_reports(self.broker.log_path, self._log_read)
            self.figures.recovery_reports += reports
            reported = " ".join(str(r.get("msg")) for r in reports)
            for cut in self._pending_cuts:  # zeros or junk must be found and cut by recovery
                if cut["action"] != "truncate" and f"{cut['topic']}/{cut['partition']}:" not in reported:
                    self.figures.unreported_cuts.append(cut)
            self._pending_cuts = []
            self.nemesis.write("start", seconds=round(seconds, 3),
                               recovery=[r.get("msg") for r in reports][:20])
            return
        raise RuntimeError(f"the broker did not come back after a kill; see {self.broker.log_path}")

    def kill(self) -> None:
        self.broker.kill()
        self.figures.kills += 1
        self.nemesis.write("kill")
        if self.options.page_cache_loss:
            time.sleep(SETTLE_S)  # answers already received get written down
            self.lose_page_cache()
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.restart()
        self.figures.kills_survived += 1

    def lose_page_cache(self) -> None:
        ends = self.acknowledged.update() if self.options.flush == "always" else {}
        for (topic, partition), directory in sorted(partition_dirs(self.broker.data_dir,
                                                                   self.topics).items()):
            if self.rng.random() < 0.3:
                continue  # this partition's pages all made it
            done = damage_partition(directory, ends.get((topic, partition), 0), self.rng)
            if done is not None:
                done = {"topic": topic, "partition": partition, **done}
                self.figures.cuts.append(done)
                self._pending_cuts.append(done)
                self.nemesis.write("cut", **done)

    def torment(self) -> None:
        """``--kills`` kills (and some pauses) at random moments spread over ``--seconds``."""
        options = self.options
        started = time.monotonic()
        end = started + options.seconds
        while self.figures.kills < options.kills:
            left = options.kills - self.figures.kills
            share = max(0.0, end - time.monotonic()) / left
            # at least a little uptime, so clients make progress between faults
            time.sleep(max(self.rng.uniform(*MIN_UPTIME_S), self.rng.uniform(0.3, 1.7) * share * 0.6))
            self.check_workers()
            if self.rng.random() < PAUSE_SHARE:
                self.figures.pauses += 1
                paused_for = self.rng.uniform(0.2, 3.0)
                self.nemesis.write("pause", seconds=round(paused_for, 3))
                self.broker.pause()
                time.sleep(paused_for)
                if self.rng.random() < KILL_WHILE_PAUSED:
                    self.figures.kills_while_paused += 1
                    self.kill()
                else:
                    self.broker.resume()
                    self.nemesis.write("resume")
            else:
                self.kill()
            progress(f"{self.figures.kills}/{options.kills} kills, {self.figures.pauses} pauses, "
                     f"{time.monotonic() - started:.0f} s")
        if options.kills == 0:
            time.sleep(options.seconds)
        self.figures.nemesis_seconds = time.monotonic() - started

    def heal(self) -> None:
        if self.broker.paused:
            self.broker.resume()
        if not self.broker.running:
            self.restart()
        self.nemesis.write("healed")

    def drain(self) -> None:
        """Wait until both groups committed the end of every partition they read."""
        from logstore.client import Admin
        from logstore.errors import LogstoreError

        started = time.monotonic()
        deadline = started + self.options.drain_seconds
        groups = {GROUP: (self.topics, False)}
        if self.options.transactions:
            groups[RC_GROUP] = ([TXN_TOPIC], True)
        with Admin(self.broker.address, timeout=10.0) as admin:
            while time.monotonic() < deadline:
                try:
                    if all(self._drained(admin, group, topics, stable)
                           for group, (topics, stable) in groups.items()):
                        self.figures.drained = True
                        break
                except LogstoreError:
                    pass
                time.sleep(0.5)
        self.figures.drain_seconds = time.monotonic() - started
        self.nemesis.write("drained", drained=self.figures.drained)

    @staticmethod
    def _drained(admin: Any, group: str, topics: list[str], stable: bool) -> bool:
        committed = {(c.topic, c.partition): c.offset for c in admin.fetch_committed(group)}
        for topic in topics:
            for info in admin.describe_topic(topic).partitions:
                end = info.last_stable_offset if stable else info.log_end_offset
                start = info.log_start_offset
                if committed.get((topic, info.partition), start) < end:
                    return False
        return True

    def execute(self) -> tuple[dict[str, Any], Report]:
        try:
            self.setup()
            progress(f"work directory {self.work_dir}; broker at {self.broker.address}")
            self.torment()
            self.heal()
            progress("healed; stopping the producers")
            self.stop_workers([w for w in self.workers if "producer" in w.role], timeout=240)
            progress("draining the consumers")
            self.drain()
            self.stop_workers([w for w in self.workers if w.role == "consumer"], timeout=60)
            self.figures.broker_exit_code = self.broker.stop()
            progress("checking the history")
        except Exception as exc:  # the broker did not come back, say: check what there is
            self.figures.aborted = f"{type(exc).__name__}: {exc}"
            progress(f"run aborted ({self.figures.aborted}); checking the history so far")
        finally:
            self.kill_everything()
            self.nemesis.close()
        report, history, crashes = self.check_history()
        summary = {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.options).items()},
            "nemesis": self.figures.to_json(),
            "crashes": crashes,
            **report.to_json(),
            "work_dir": str(self.work_dir),
            "history": str(history),
        }
        return summary, report

    def check_history(self) -> tuple[Report, Path, int]:
        """Merge the workers' histories into one file and check it; returns the report, the
        merged file and how many client crashes it holds (noted among the worker problems)."""
        events = read_history(sorted(self.history_dir.glob("*.jsonl")))
        history = Path(self.options.history or self.work_dir / "history.jsonl")
        with open(history, "w", encoding="utf-8") as file:
            for event in events:
                file.write(json.dumps(event, separators=(",", ":")) + "\n")
        crashes = [e for e in events if e["type"] == "crash"]
        for crash in crashes[:10]:
            self.figures.worker_problems.append(
                f"{crash['process']} crashed: {crash['error'].strip().splitlines()[-1]}")
        return check(events), history, len(crashes)


def failed(summary: dict[str, Any], report: Report) -> bool:
    nemesis = summary["nemesis"]
    return bool(report.anomalies or summary["crashes"] or nemesis["restarts_failed"]
                or nemesis["unreported_cuts"] or nemesis["aborted"]
                or nemesis["worker_problems"] or nemesis["broker_exit_code"] not in (0, None)
                or not nemesis["drained"])


def print_summary(summary: dict[str, Any], report: Report) -> None:
    nemesis = summary["nemesis"]
    options = summary["options"]
    print(f"torture: seed {options['seed']}, flush={options['flush']}, "
          f"{options['producers']} producers, {options['consumers']} consumers, "
          f"{options['partitions']} partitions"
          + (", transactions" if options["transactions"] else "")
          + (", page-cache loss" if options["page_cache_loss"] else ""))
    print(f"nemesis: {nemesis['kills_survived']}/{nemesis['kills']} kills survived "
          f"({nemesis['kills_while_paused']} while paused), {nemesis['pauses']} pauses, "
          f"{nemesis['restarts_failed']} failed restarts, in {nemesis['nemesis_seconds']} s; "
          f"restart median {_seconds(nemesis['restart_seconds_median'])}, "
          f"max {_seconds(nemesis['restart_seconds_max'])}")
    if options["page_cache_loss"]:
        print(f"page-cache loss: {nemesis['page_cache_cuts']} partitions damaged "
              f"{nemesis['page_cache_cut_actions']}; the broker's recovery reported "
              f"{nemesis['recovery_reports']} cuts; {len(nemesis['unreported_cuts'])} "
              f"zeroed or garbled partitions went unreported")
    print_outcome(nemesis, summary, report)
    print(f"torture: {'FAILED' if failed(summary, report) else 'OK'}: "
          f"{report.anomalies} anomalies")


def print_outcome(figures: dict[str, Any], summary: dict[str, Any], report: Report) -> None:
    """The drain, the problems, the checker's report and where the history is."""
    print(f"drained: {figures['drained']} in {figures['drain_seconds']} s; broker exit code "
          f"{figures['broker_exit_code']}; client crashes {summary['crashes']}")
    if figures["aborted"]:
        print(f"  the run was aborted: {figures['aborted']}")
    for problem in figures["worker_problems"]:
        print(f"  problem: {problem}")
    print(report.text())
    print(f"history: {summary['history'] or 'removed with the work directory (--keep keeps it)'}")


def progress(message: str) -> None:
    print(f"torture: {message}", file=sys.stderr, flush=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--cluster" in argv:  # the cluster run has options of its own
        from bench.torture.cluster_run import main as cluster_main

        return cluster_main([a for a in argv if a != "--cluster"])
    options = parse(argv)
    return finish(Run(options), failed, print_summary, given_work_dir=bool(options.work_dir))


def finish(run: Run, failed: Callable[[dict[str, Any], Report], bool],
           print_summary: Callable[[dict[str, Any], Report], None], *, given_work_dir: bool) -> int:
    """Execute the run, print (and with --json write) its summary, remove the work directory
    after a clean run unless it was given or --keep; the exit code."""
    options = run.options
    summary, report = run.execute()
    bad = failed(summary, report)
    remove = not bad and not options.keep and not given_work_dir
    if remove and not options.history:
        summary["history"] = None
    print_summary(summary, report)
    if options.json:
        Path(options.json).write_text(json.dumps(summary, indent=2) + "\n")
    if remove:
        shutil.rmtree(run.work_dir, ignore_errors=True)
    else:
        print(f"work directory kept: {run.work_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
