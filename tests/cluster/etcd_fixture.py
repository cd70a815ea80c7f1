"""Real etcd members (Debian's ``etcd`` binary, from etcd-server) on free loopback ports.

Loaded as a pytest plugin (``-p tests.cluster.etcd_fixture`` in pyproject.toml). Fixtures:

- ``etcd``: a fresh 1-member cluster; ``etcd3``: a fresh 3-member cluster.
- ``etcd_factory``: ``etcd_factory(size=1, host="127.0.0.1")`` starts more (``module_etcd_factory``:
  the same for module-scoped fixtures).

Each member has its own data directory under the test's tmp_path and test-speed raft settings
(heartbeat 50 ms, election timeout 500 ms: a new raft leader within ~1 s, leases down to 1 s).
Every member still running at teardown is SIGKILLed and its data directory removed, also when
the test failed. An ``EtcdCluster`` has ``endpoints`` ("h:p,h:p,h:p", for ``EtcdClient``),
``members[i]`` with ``stop()`` (SIGTERM), ``kill()`` (SIGKILL), ``pause()``/``resume()``
(SIGSTOP/SIGCONT), ``start()`` again on the same data directory and ``restart()``, and ``leader_index()``: the
member raft elected, by each member's Maintenance Status.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.broker_fixture import free_port

START_TIMEOUT_S = 20.0
#: Raft timing for tests; etcd's defaults are 100 ms and 1000 ms.
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500


class EtcdMember:
    def __init__(self, name: str, data_dir: Path, host: str) -> None:
        self.name = name
        self.data_dir = data_dir
        self.host = host
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = data_dir.parent / f"{name}.log"
        self.initial_cluster = ""
        #: More loopback addresses the client API also listens on (one per broker in cluster
        #: tests, so that one broker's etcd traffic can be cut with nftables).
        self.client_aliases: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the client API."""
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        client_url = f"http://{self.address}"
        listen = ",".join([client_url] + [f"http://{h}:{self.client_port}" for h in self.client_aliases])
        return [
            "etcd",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", listen,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"logstore-test-{self.data_dir.parent.name}",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--logger", "zap",
            "--log-level", "warn",
        ]

    def start(self) -> EtcdMember:
        """Start (or restart on the same data directory); does not wait."""
        if self.running:
            raise RuntimeError(f"etcd member {self.name} is already running")
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(self.command(), stdout=log_file, stderr=subprocess.STDOUT)
        return self

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``)."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self) -> EtcdMember:
        """SIGTERM, then start again on the same data directory and ports; does not wait (use
        ``EtcdCluster.wait_healthy`` once enough members run for a quorum)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout_s: float = 1.0) -> dict[str, object]:
        """Maintenance Status as etcd's JSON gateway gives it (ids are decimal strings)."""
        request = urllib.request.Request(
            f"http://{self.address}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return dict(json.load(answer))

    def healthy(self) -> bool:
        """Up, with a raft leader, and answering a quorum read (etcd's /health)."""
        try:
            with urllib.request.urlopen(f"http://{self.address}/health", timeout=1.0) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


class EtcdCluster:
    def __init__(self, directory: Path, size: int, host: str = "127.0.0.1") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.members = [EtcdMember(f"m{i}", directory / f"m{i}", host) for i in range(size)]
        initial = ",".join(f"{member.name}={member.peer_url}" for member in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self) -> str:
        """Every member's client address, comma-separated: ``EtcdClient(cluster.endpoints)``."""
        return ",".join(member.address for member in self.members)

    def endpoints_via(self, alias: str) -> str:
        """The same members at one of their client aliases."""
        return ",".join(f"{alias}:{member.client_port}" for member in self.members)

    def start(self) -> EtcdCluster:
        for member in self.members:
            member.start()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until every running member reports healthy (quorum and a leader)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for member in self.members:
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"etcd {member.name} exited:\n{member.log()}")
            if all(member.healthy() for member in self.members if member.running):
                return
            time.sleep(0.05)
        logs = "\n".join(f"--- {member.name}\n{member.log()}" for member in self.members)
        raise RuntimeError(f"etcd not healthy after {timeout_s} s:\n{logs}")

    def leader_index(self, timeout_s: float = 5.0) -> int:
        """Index in ``members`` of the raft leader, as the running members report it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index, member in enumerate(self.members):
                if not member.running:
                    continue
                try:
                    status = member.status()
                except (OSError, ValueError):
                    continue
                header = status.get("header")
                if isinstance(header, dict) and status.get("leader") == header.get("member_id"):
                    return index
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader within {timeout_s} s")

    def close(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def etcd_clusters(directory: Path) -> Iterator[Callable[..., EtcdCluster]]:
    """A factory of etcd clusters under ``directory``, every one closed on exit."""
    started: list[EtcdCluster] = []

    def factory(size: int = 1, host: str = "127.0.0.1", client_aliases: Sequence[str] = ()) -> EtcdCluster:
        cluster = EtcdCluster(directory / f"etcd{len(started)}", size, host)
        for member in cluster.members:
            member.client_aliases = list(client_aliases)
        started.append(cluster)
        return cluster.start()

    try:
        yield factory
    finally:
        for cluster in started:
            cluster.close()


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    with etcd_clusters(tmp_path) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_etcd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EtcdCluster]]:
    """``etcd_factory`` for module-scoped fixtures (one cluster shared by a module's tests)."""
    with etcd_clusters(tmp_path_factory.mktemp("etcd")) as factory:
        yield factory


@pytest.fixture
def etcd(etcd_factory: Callable[..., EtcdCluster]) -> EtcdCluster:
    return etcd_factory(1)


@pytest.fixture
def etcd3(etcd_factory: Callable[..., EtcdCluster]) -> EtcdCluster:
    return etcd_factory(3)
