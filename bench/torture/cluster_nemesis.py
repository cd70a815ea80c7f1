"""The cluster run's nemesis: one bounded fault at a time on a ``LocalCluster``.

Kinds (``KINDS``), each undone by the nemesis itself within a few seconds:

- ``kill``: SIGKILL a broker, restart it 0.2-2.5 s later on the same data and address;
- ``pause``: SIGSTOP a broker for 0.3-5 s (often past its 2 s lease: it is deposed while
  frozen and must be fenced when it wakes), then SIGCONT;
- ``isolate``: nftables drops every packet of the broker's address and etcd alias for
  1-6 s, then the rules are removed;
- ``etcd_kill``: SIGKILL one etcd member (the raft leader half of the time), restart it
  0.5-3 s later; only one member is ever down, so etcd keeps its quorum.

The first faults are one of each kind (in random order), then kinds are drawn by ``WEIGHTS``.
A broker fault targets the controller with probability ``CONTROLLER_SHARE``, another broker
otherwise. After each fault the nemesis waits (at most ``RECOVERY_TIMEOUT_S``) until every
broker is back in the cluster and every partition of the run's topic has a leader and a full
ISR, so that faults do not pile up into plain unavailability; a wait that runs out is counted
(``not_recovered``), not an anomaly. Every fault is a ``fault`` event in the history.

Who locks: nothing; the run's main thread drives it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.torture.cluster import LocalCluster
from bench.torture.workload import History

KINDS = ("kill", "pause", "isolate", "etcd_kill")
WEIGHTS = {"kill": 0.35, "pause": 0.25, "isolate": 0.25, "etcd_kill": 0.15}
CONTROLLER_SHARE = 0.35
RECOVERY_TIMEOUT_S = 45.0
#: After a fault is undone, how long the nemesis waits before it asks whether all is well.
SETTLE_S = 1.0
KILL_DOWN_S = (0.2, 2.5)
PAUSE_S = (0.3, 5.0)
ISOLATE_S = (1.0, 6.0)
ETCD_DOWN_S = (0.5, 3.0)


@dataclass
class FaultFigures:
    by_kind: Counter[str] = field(default_factory=Counter)
    controller_targeted: int = 0
    etcd_leader_targeted: int = 0
    restarts_failed: int = 0
    not_recovered: int = 0
    recovery_seconds: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def to_json(self) -> dict[str, Any]:
        seconds = self.recovery_seconds
        return {
            "faults": self.total,
            "by_kind": {kind: self.by_kind[kind] for kind in KINDS},
            "controller_targeted": self.controller_targeted,
            "etcd_leader_targeted": self.etcd_leader_targeted,
            "restarts_failed": self.restarts_failed,
            "not_recovered": self.not_recovered,
            "recovery_seconds_median": round(statistics.median(seconds), 2) if seconds else None,
            "recovery_seconds_max": round(max(seconds), 2) if seconds else None,
        }


class ClusterNemesis:
    def __init__(self, cluster: LocalCluster, history: History, rng: random.Random,
                 topic: str, kinds: list[str]) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.topic = topic
        self.kinds = kinds
        self.figures = FaultFigures()

    # -- what the cluster says -------------------------------------------------------------------

    def describe(self) -> Any:
        """``Admin.describe_cluster()`` through the brokers that run and are not cut off
        (None if none answers)."""
        from logstore.client import Admin
        from logstore.errors import LogstoreError

        for broker_id, broker in self.cluster.brokers.items():
            if not broker.running or broker.paused or broker_id in self.cluster.isolated:
                continue
            try:
                with Admin(broker.address, timeout=3.0) as admin:
                    return admin.describe_cluster()
            except LogstoreError:
                continue
        return None

    def formed(self) -> bool:
        """Every broker is alive in the cluster and there is a controller."""
        description = self.describe()
        return description is not None and description.controller_id >= 0 and {
            b.broker_id for b in description.brokers if b.alive} == set(self.cluster.brokers)

    def recovered(self) -> bool:
        description = self.describe()
        if description is None:
            return False
        alive = {b.broker_id for b in description.brokers if b.alive}
        if alive != set(self.cluster.brokers) or description.controller_id < 0:
            return False
        mine = [p for p in description.partitions if p.topic == self.topic]
        return bool(mine) and all(p.leader_id >= 0 and len(p.isr) == len(p.replicas) for p in mine)

    def wait_recovered(self, timeout_s: float = RECOVERY_TIMEOUT_S) -> bool:
        started = time.monotonic()
        time.sleep(SETTLE_S)  # the controller notices a fault (an expired lease) first
        while time.monotonic() - started < timeout_s:
            if self.recovered():
                self.figures.recovery_seconds.append(time.monotonic() - started)
                self.history.write("recovered", seconds=round(time.monotonic() - started, 3))
                return True
            time.sleep(0.2)
        self.figures.not_recovered += 1
        self.history.write("not_recovered", seconds=timeout_s)
        return False

    # -- faults ----------------------------------------------------------------------------------

    def fault(self) -> str:
        """Inject one fault, wait until it is undone; returns its kind."""
        unused = [k for k in self.kinds if not self.figures.by_kind[k]]
        if unused:  # every kind once first, so that a short run has each
            kind = self.rng.choice(unused)
        else:
            kind = self.rng.choices(self.kinds, [WEIGHTS[k] for k in self.kinds])[0]
        if kind == "etcd_kill":
            self.kill_etcd()
        else:
            broker_id, controller = self.target()
            {"kill": self.kill, "pause": self.pause, "isolate": self.isolate}[kind](broker_id, controller)
        self.figures.by_kind[kind] += 1
        return kind

    def target(self) -> tuple[int, bool]:
        ids = sorted(self.cluster.brokers)
        if self.rng.random() < CONTROLLER_SHARE:
            description = self.describe()
            if description is not None and description.controller_id in self.cluster.brokers:
                self.figures.controller_targeted += 1
                return description.controller_id, True
        return self.rng.choice(ids), False

    def kill(self, broker_id: int, controller: bool) -> None:
        broker = self.cluster.brokers[broker_id]
        down_s = self.rng.uniform(*KILL_DOWN_S)
        self.history.write("fault", fault="kill", broker=broker_id, controller=controller,
                           seconds=round(down_s, 3))
        broker.kill()
        time.sleep(down_s)
        self.restart(broker_id)

    def restart(self, broker_id: int) -> None:
        broker = self.cluster.brokers[broker_id]
        for attempt in (1, 2):
            try:
                seconds = broker.start(timeout=60.0)
                self.history.write("start", broker=broker_id, seconds=round(seconds, 3))
                return
            except RuntimeError as exc:
                self.figures.restarts_failed += 1
                self.history.write("start_failed", broker=broker_id, attempt=attempt,
                                   error=str(exc)[:500])
                broker.kill()
        raise RuntimeError(f"broker {broker_id} did not come back; see {broker.log_path}")

    def pause(self, broker_id: int, controller: bool) -> None:
        broker = self.cluster.brokers[broker_id]
        paused_s = self.rng.uniform(*PAUSE_S)
        self.history.write("fault", fault="pause", broker=broker_id, controller=controller,
                           seconds=round(paused_s, 3))
        broker.pause()
        time.sleep(paused_s)
        broker.resume()
        self.history.write("resume", broker=broker_id)

    def isolate(self, broker_id: int, controller: bool) -> None:
        cut_s = self.rng.uniform(*ISOLATE_S)
        self.history.write("fault", fault="isolate", broker=broker_id, controller=controller,
                           seconds=round(cut_s, 3))
        self.cluster.isolate(broker_id)
        try:
            time.sleep(cut_s)
        finally:
            self.cluster.heal()
        self.history.write("healed", broker=broker_id)

    def kill_etcd(self) -> None:
        leader = self.cluster.etcd_leader() if self.rng.random() < 0.5 else None
        member = leader or self.rng.choice(self.cluster.etcd)
        if leader is not None:
            self.figures.etcd_leader_targeted += 1
        down_s = self.rng.uniform(*ETCD_DOWN_S)
        self.history.write("fault", fault="etcd_kill", member=member.name,
                           leader=leader is not None, seconds=round(down_s, 3))
        member.kill()
        time.sleep(down_s)
        member.start()
        if not self.cluster.wait_etcd(30.0):
            raise RuntimeError(f"etcd did not become healthy after restarting {member.name}")
        self.history.write("etcd_start", member=member.name)

    def heal(self) -> None:
        """Undo anything left (after an interrupted fault): rules, pauses, dead processes."""
        self.cluster.heal()
        for member in self.cluster.etcd:
            if not member.running:
                member.start()
        self.cluster.wait_etcd(30.0)
        for broker_id, broker in self.cluster.brokers.items():
            if broker.paused:
                broker.resume()
            if not broker.running:
                self.restart(broker_id)
