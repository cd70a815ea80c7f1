"""The clusters of the cluster benchmark: etcd members with three ``logstore serve --cluster``
brokers, and a three-node NATS JetStream cluster, each process with its own directory under one
root.

- **etcd**: ``ETCD_MEMBERS`` members of Debian's ``etcd`` on 127.0.0.1 (free ports, etcd's own
  default raft timing). They hold only metadata: no record passes through etcd.
- **logstore**: broker ``i`` (1..3) listens on 127.0.0.(10+i) (as ``scripts/cluster`` and the
  cluster tests do), with a TOML config whose ``[cluster_settings]`` has a test-speed membership
  lease (``LEASE_TTL_MS``: a killed broker is dead for the cluster after 2 s, the production
  default is 3 s); everything else is the brokers' defaults. ``kill`` is a SIGKILL, ``restart``
  starts the same broker again on its data directory, id and address.
- **NATS**: three ``nats-server -js`` on 127.0.0.1, each with a store directory, clustered with
  nats-server's own routes (``--cluster``, ``--routes`` to the other two, one
  ``--cluster_name``); JetStream elects its meta leader over those routes.

``ClusterServers`` is a context manager: on leaving it (normally, on an exception, on Ctrl-C)
every process it started is stopped (brokers with SIGKILL, see ``stop_all``; etcd and NATS with
SIGTERM, SIGKILL after ``STOP_TIMEOUT_S``) and its directory removed. Processes run in their own session, so a Ctrl-C reaches only the harness.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.servers import Server, nats_greeting, wait_until, which

ETCD_MEMBERS = 3
BROKERS = 3
#: The brokers' membership lease: test speed, so a failover takes ~2 s, not ~3 s.
LEASE_TTL_MS = 2000
CLUSTER_NAME = "bench"
NATS_CLUSTER_NAME = "bench"
#: Bounds every wait for the clusters (start, a leader, an ISR, a metadata answer).
WAIT_S = 60.0
RPC_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class HostServer(Server):
    """A ``Server`` listening on its own loopback address (127.0.0.11, ...)."""

    host: str = "127.0.0.1"
    broker_id: int = 0
    #: host:port of the broker's /metrics ('' when it serves none, the suite's default).
    metrics_address: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL and wait (the data directory stays)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S,
             servers: tuple[Server, ...] = ()) -> Any:
    """``condition()``'s first truthy answer; RuntimeError after ``timeout_s`` with the last
    answer or error and the tails of ``servers``' logs."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        for server in servers:
            server.check_alive()
        try:
            last = condition()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - not there yet; retried until the deadline
            last = exc
        time.sleep(0.05)
    logs = "".join(f"\n--- {s.name} ({s.log_path}):\n{s.log_tail()}" for s in servers)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s (last: {last}){logs}")


class LogstoreCluster:
    """Three brokers on one etcd cluster; the harness's view of them (metadata, topics)."""

    def __init__(self, etcd: list[Server], brokers: list[HostServer]) -> None:
        self.etcd = etcd
        self.brokers = brokers

    def broker(self, broker_id: int) -> HostServer:
        return next(b for b in self.brokers if b.broker_id == broker_id)

    def running(self) -> list[HostServer]:
        return [b for b in self.brokers if b.running]

    def call(self, method: str, request: Any, via: HostServer | None = None,
             timeout_s: float = RPC_TIMEOUT_S) -> Any:
        """One unary call to ``via`` (default: the first running broker, the next one only when
        a broker is UNAVAILABLE: any other answer may mean the call took effect)."""
        import grpc

        from logstore.api.v1 import logstore_pb2_grpc

        last: Exception | None = None
        for broker in [via] if via else self.running():
            try:
                with grpc.insecure_channel(broker.address) as channel:
                    stub = logstore_pb2_grpc.LogStoreStub(channel)
                    return getattr(stub, method)(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                last = exc
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break
        raise RuntimeError(f"{method} failed: {last}")

    def metadata(self, topics: list[str] | None = None, via: HostServer | None = None) -> Any:
        from logstore.api.v1 import cluster_pb2

        return self.call("Metadata", cluster_pb2.MetadataRequest(topics=topics or []), via)

    def partitions(self, topic: str, via: HostServer | None = None) -> list[Any]:
        (described,) = self.metadata([topic], via).topics
        if described.error.reason:
            raise RuntimeError(f"{topic}: {described.error.reason} {described.error.message}")
        return list(described.partitions)

    def leaders(self, topic: str) -> dict[int, list[int]]:
        """Broker id -> the partitions of ``topic`` it leads (every partition has a leader)."""
        led: dict[int, list[int]] = {}
        for state in self.partitions(topic):
            if state.leader_id < 0:
                raise RuntimeError(f"{topic}/{state.partition} has no leader")
            led.setdefault(state.leader_id, []).append(state.partition)
        return led

    def leader_epochs(self, topic: str) -> list[int]:
        return [state.leader_epoch for state in self.partitions(topic)]

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     config: Mapping[str, str]) -> None:
        from logstore.api.v1 import admin_pb2

        self.call("CreateTopic", admin_pb2.CreateTopicRequest(
            name=name, partitions=partitions, replication_factor=replication_factor,
            config=dict(config)), timeout_s=60)
        wait_for(lambda: self.full_isr(name, replication_factor),
                 f"every replica of {name} in sync", servers=tuple(self.running()))

    def delete_topic(self, name: str) -> None:
        from logstore.api.v1 import admin_pb2

        self.call("DeleteTopic", admin_pb2.DeleteTopicRequest(name=name), timeout_s=60)

    def full_isr(self, topic: str, replication_factor: int) -> bool:
        """Every partition has a live leader and all ``replication_factor`` replicas in its ISR."""
        alive = {b.broker_id for b in self.running()}
        states = self.partitions(topic)
        return all(s.leader_id in alive and len(s.isr) == replication_factor for s in states)

    def wait_ready(self) -> None:
        def ready() -> bool:
            answer = self.metadata()
            return answer.controller_id > 0 and sum(b.alive for b in answer.brokers) == BROKERS

        wait_for(ready, "a controller and every broker alive in etcd",
                 servers=tuple(self.etcd) + tuple(self.brokers))

    def restart(self, broker: HostServer) -> None:
        """Start a killed broker again (same data, id and address) and wait until it answers."""
        broker.start()
        wait_for(lambda: self.metadata(via=broker).broker_id == broker.broker_id,
                 f"broker {broker.broker_id} answering again", servers=(broker,))


class NatsCluster:
    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    @property
    def addresses(self) -> list[str]:
        return [server.address for server in self.servers]


class ClusterServers:
    """Every process of one benchmark run; ``with ClusterServers(root, env) as s: s.start_*()``."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = env
        self.started: list[Server] = []

    def __enter__(self) -> ClusterServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        """Brokers are SIGKILLed (their data is thrown away, and a SIGTERM would wait the whole
        ``controlled_shutdown_timeout_ms`` for a broker to hand its leaderships to when every
        broker stops), the others stopped with SIGTERM."""
        for server in reversed(self.started):
            if isinstance(server, HostServer):
                server.kill()
            else:
                server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
        self.started.clear()

    def _new(self, server: Server) -> Server:
        server.directory.mkdir(parents=True, exist_ok=True)
        self.started.append(server)
        server.start()
        return server

    # -- logstore on etcd ------------------------------------------------------------------------

    def start_logstore(self, etcd_members: int = ETCD_MEMBERS, metrics: bool = False) -> LogstoreCluster:
        """etcd, then the brokers; ``metrics`` gives each broker a /metrics endpoint on its own
        address (the suite runs without: a scrape would cost CPU in the measurements)."""
        binary = which("etcd")
        if binary is None:
            raise RuntimeError("etcd not found: run scripts/install-peers (Debian's etcd-server)")
        names = [f"etcd{i}" for i in range(etcd_members)]
        ports = [(free_port(), free_port()) for _ in names]
        initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, (_, peer) in zip(names, ports,
                                                                                 strict=True))
        etcd: list[Server] = []
        for name, (client, peer) in zip(names, ports, strict=True):
            directory = self.root / name
            command = [binary, "--name", name, "--data-dir", str(directory / "data"),
                       "--listen-client-urls", f"http://127.0.0.1:{client}",
                       "--advertise-client-urls", f"http://127.0.0.1:{client}",
                       "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                       "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                       "--initial-cluster", initial, "--initial-cluster-state", "new",
                       "--initial-cluster-token", self.root.name, "--logger", "zap",
                       "--log-level", "warn"]
            etcd.append(self._new(Server(name, command, directory, client)))
        for member in etcd:
            wait_until(member, lambda m=member: _etcd_healthy(m.address), "report healthy")
        endpoints = ",".join(member.address for member in etcd)

        config = self.root / "logstore-cluster.toml"
        config.write_text(f"[cluster_settings]\nlease_ttl_ms = {LEASE_TTL_MS}\n")
        brokers: list[HostServer] = []
        for broker_id in range(1, BROKERS + 1):
            host = f"127.0.0.{10 + broker_id}"
            port = free_port(host)
            directory = self.root / f"broker{broker_id}"
            metrics_address = f"{host}:{free_port(host)}" if metrics else ""
            command = [sys.executable, "-m", "logstore", "serve", "--data-dir",
                       str(directory / "data"), "--listen", f"{host}:{port}",
                       "--metrics-listen", metrics_address, "--config", str(config),
                       "--cluster", f"etcd://{endpoints}", "--broker-id", str(broker_id),
                       "--cluster-name", CLUSTER_NAME, "--log-format", "text",
                       "--log-level", "info", "--grace-period", "2"]
            server = HostServer(f"broker{broker_id}", command, directory, port, self.env,
                                host=host, broker_id=broker_id, metrics_address=metrics_address)
            self._new(server)
            brokers.append(server)
        cluster = LogstoreCluster(etcd, brokers)
        cluster.wait_ready()
        return cluster

    # -- NATS JetStream --------------------------------------------------------------------------

    def start_nats(self, nodes: int = 3) -> NatsCluster:
        binary = which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server not found: run scripts/install-peers")
        ports = [(free_port(), free_port()) for _ in range(nodes)]
        servers: list[Server] = []
        for index, (client, route) in enumerate(ports):
            directory = self.root / f"nats{index}"
            routes = ",".join(f"nats://127.0.0.1:{r}" for i, (_, r) in enumerate(ports)
                              if i != index)
            command = [binary, "-js", "-sd", str(directory / "jetstream"), "-a", "127.0.0.1",
                       "-p", str(client), "-n", f"bench-{index}",
                       "--cluster_name", NATS_CLUSTER_NAME,
                       "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes]
            servers.append(self._new(Server(f"nats{index}", command, directory, client)))
        for server in servers:
            server.info = wait_until(server, lambda s=server: nats_greeting(s.address),
                                     "greet with JetStream enabled")
            server.info["command"] = " ".join(server.command)
        return NatsCluster(servers)


def _etcd_healthy(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/health", timeout=1) as answer:
        if json.load(answer).get("health") != "true":
            raise RuntimeError("not healthy yet")
    return True
