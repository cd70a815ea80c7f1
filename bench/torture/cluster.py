"""The processes of ``scripts/torture --cluster``: etcd members and clustered brokers on loopback,
and the nftables rules that cut one broker off.

Layout (chosen away from the cluster tests' 127.0.0.11-13 / .31-33, so that a test's isolation
rules and this run's never touch each other's traffic):

- etcd member ``i`` listens on 127.0.0.1 (free ports) and, for its clients, also on one alias
  per broker: broker ``b`` (1..N) reaches every member at 127.0.0.(130+b);
- broker ``b`` listens on 127.0.0.(110+b) (a free port, kept across restarts), data in
  ``WORK/broker-b``, log in ``WORK/broker-b.log``.

Cutting broker ``b`` off drops every packet to or from 127.0.0.(110+b) and 127.0.0.(130+b): no
client or broker reaches it and it reaches no etcd member, so its lease runs out. The rules live
in a table of their own (``logstore_torture_<pid>``), and ``heal()`` deletes it; ``close()``
does too, so an interrupted run leaves no rule behind.

Who locks: nothing; one thread (the nemesis) drives these objects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.torture.broker import Broker, free_port

#: Raft timing: etcd's defaults (100 ms, 1 s) leave room for a loaded box.
ETCD_HEARTBEAT_MS = 100
ETCD_ELECTION_TIMEOUT_MS = 1000
#: Membership lease and ISR lag of the brokers: short, so a fault shows within seconds.
LEASE_TTL_MS = 2000
REPLICA_LAG_TIME_MS = 4000
CONTROLLED_SHUTDOWN_TIMEOUT_MS = 3000


def broker_host(broker_id: int) -> str:
    return f"127.0.0.{110 + broker_id}"


def etcd_alias(broker_id: int) -> str:
    return f"127.0.0.{130 + broker_id}"


def _nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)


class EtcdMember:
    def __init__(self, name: str, directory: Path, aliases: list[str]) -> None:
        self.name = name
        self.data_dir = directory / f"etcd-{name}"
        self.log_path = directory / f"etcd-{name}.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.aliases = aliases
        self.initial_cluster = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        listen = ",".join([f"http://{self.address}"]
                          + [f"http://{alias}:{self.client_port}" for alias in self.aliases])
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen([
                "etcd", "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", listen, "--advertise-client-urls", f"http://{self.address}",
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"logstore-torture-{os.getpid()}",
                "--heartbeat-interval", str(ETCD_HEARTBEAT_MS),
                "--election-timeout", str(ETCD_ELECTION_TIMEOUT_MS),
                "--logger", "zap", "--log-level", "warn",
            ], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/health", timeout=1.0) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError):
            return False

    def is_leader(self) -> bool:
        request = urllib.request.Request(f"http://{self.address}/v3/maintenance/status",
                                         data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1.0) as answer:
                status = json.load(answer)
        except (OSError, ValueError):
            return False
        return bool(status.get("leader") == status.get("header", {}).get("member_id"))


class LocalCluster:
    """``etcd_members`` etcd members and ``brokers`` clustered brokers in ``directory``."""

    def __init__(self, directory: Path, brokers: int, etcd_members: int) -> None:
        self.directory = directory
        aliases = [etcd_alias(b) for b in range(1, brokers + 1)]
        self.etcd = [EtcdMember(f"m{i}", directory, aliases) for i in range(etcd_members)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.etcd)
        for member in self.etcd:
            member.initial_cluster = initial
        config = directory / "broker.toml"
        config.write_text(
            "[cluster_settings]\n"
            f"lease_ttl_ms = {LEASE_TTL_MS}\nreplica_lag_time_ms = {REPLICA_LAG_TIME_MS}\n"
            f"controlled_shutdown_timeout_ms = {CONTROLLED_SHUTDOWN_TIMEOUT_MS}\n")
        self.brokers: dict[int, Broker] = {}
        for broker_id in range(1, brokers + 1):
            endpoints = ",".join(f"{etcd_alias(broker_id)}:{m.client_port}" for m in self.etcd)
            self.brokers[broker_id] = Broker(
                directory / f"broker-{broker_id}", directory / f"broker-{broker_id}.log",
                host=broker_host(broker_id),
                args=["--config", str(config), "--cluster", f"etcd://{endpoints}",
                      "--broker-id", str(broker_id), "--cluster-name", "torture"])
        self.isolated: set[int] = set()
        self._table = f"logstore_torture_{os.getpid()}"

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def start(self, timeout_s: float = 60.0) -> None:
        for member in self.etcd:
            member.start()
        self.wait_etcd(timeout_s)
        for broker in self.brokers.values():
            broker.start_process()
        for broker in self.brokers.values():
            broker.wait_ready(timeout_s)

    def wait_etcd(self, timeout_s: float = 30.0) -> bool:
        """Every running member healthy (a quorum and a raft leader)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(m.healthy() for m in self.etcd if m.running):
                return True
            time.sleep(0.1)
        return False

    def etcd_leader(self) -> EtcdMember | None:
        return next((m for m in self.etcd if m.running and m.is_leader()), None)

    # -- isolation -------------------------------------------------------------------------------

    def isolate(self, broker_id: int) -> None:
        """Drop every packet to or from the broker's address and its etcd alias."""
        if not self.isolated:
            _nft("add", "table", "inet", self._table)
            _nft("add", "chain", "inet", self._table, "out", "{ type filter hook output priority 0; }")
        for address in (broker_host(broker_id), etcd_alias(broker_id)):
            _nft("add", "rule", "inet", self._table, "out", "ip", "daddr", address, "drop")
            _nft("add", "rule", "inet", self._table, "out", "ip", "saddr", address, "drop")
        self.isolated.add(broker_id)

    def heal(self) -> None:
        """Remove every isolation rule (the whole table)."""
        if self.isolated:
            self.isolated.clear()
            _nft("delete", "table", "inet", self._table)

    def close(self) -> None:
        """Kill everything, remove the rules."""
        try:
            self.heal()
        finally:
            for broker in self.brokers.values():
                broker.kill()
            for member in self.etcd:
                member.kill()
