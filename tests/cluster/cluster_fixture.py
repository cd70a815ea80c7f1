"""Real clusters for tests: real etcd members plus real ``logstore serve --cluster`` processes,
each broker on its own loopback address (127.0.0.11, .12, ...), with test-speed settings
(1 s etcd election, 2 s membership lease, 3 s replica lag).

Fixture ``cluster_factory(brokers=3, etcd_members=1, **settings)`` (``module_cluster_factory``
for one cluster shared by a module's tests) returns a started
``LogstoreCluster``: ``brokers[i]`` (``BrokerProcess`` with ``broker_id``), ``etcd``
(``EtcdCluster``), ``bootstrap`` ("h1:p1,h2:p2,..."), ``metadata()``, ``leader_of(topic, p)``,
``wait_for_leader(topic, p, not_in=...)``. Everything is killed at teardown. Every wait is bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from logstore.api.v1 import admin_pb2, cluster_pb2, logstore_pb2_grpc
from tests.broker_fixture import BrokerProcess, free_port
from tests.certs import Certificates

#: Test-speed cluster settings (the production defaults are 3 s and 10 s).
LEASE_TTL_MS = 2000
REPLICA_LAG_TIME_MS = 3000
TIMEOUT_S = 10.0
#: LOGSTORE_TEST_BROKER_LOG=debug shows the brokers' debug logs in their log files.
LOG_LEVEL = f'log_level = "{os.environ.get("LOGSTORE_TEST_BROKER_LOG", "info")}"\n'


def etcd_alias(broker_id: int) -> str:
    """The loopback address broker ``broker_id`` reaches etcd at."""
    return f"127.0.0.{30 + broker_id}"


class ClusterBroker(BrokerProcess):
    def __init__(self, data_dir: Path, host: str, broker_id: int, args: list[str], config: Path) -> None:
        super().__init__(data_dir, args=args, config=config)
        self.host = host
        self.broker_id = broker_id

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        return f"{self.host}:{self.metrics_port}"


class _Token(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token}")]
        return continuation(details._replace(metadata=metadata), request)


class LogstoreCluster:
    def __init__(self, etcd: Any, brokers: list[ClusterBroker], token: str = "",
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.etcd = etcd
        self.brokers = brokers
        #: Sent with every call the helpers below make (clusters started with a security file).
        self.token = token
        #: TLS of the helpers' channels (clusters started with ``tls``).
        self.credentials = credentials

    def channel(self, address: str) -> grpc.Channel:
        channel = (grpc.insecure_channel(address) if self.credentials is None
                   else grpc.secure_channel(address, self.credentials))
        return grpc.intercept_channel(channel, _Token(self.token)) if self.token else channel

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers)

    def broker(self, broker_id: int) -> ClusterBroker:
        return next(b for b in self.brokers if b.broker_id == broker_id)

    def running(self) -> list[ClusterBroker]:
        return [b for b in self.brokers if b.running]

    def stub(self, broker: ClusterBroker) -> logstore_pb2_grpc.LogStoreStub:
        return logstore_pb2_grpc.LogStoreStub(self.channel(broker.address))

    def metadata(self, topics: list[str] | None = None, via: ClusterBroker | None = None) -> cluster_pb2.MetadataResponse:
        last: Exception | None = None
        for broker in [via] if via else self.running():
            try:
                with self.channel(broker.address) as channel:
                    stub = logstore_pb2_grpc.LogStoreStub(channel)
                    return stub.Metadata(cluster_pb2.MetadataRequest(topics=topics or []), timeout=TIMEOUT_S)
            except grpc.RpcError as exc:
                last = exc
        raise AssertionError(f"no broker answered Metadata: {last}")

    def partition(self, topic: str, partition: int, via: ClusterBroker | None = None) -> cluster_pb2.PartitionMetadata:
        (described,) = self.metadata([topic], via).topics
        return described.partitions[partition]

    def leader_of(self, topic: str, partition: int = 0) -> ClusterBroker:
        return self.broker(self.partition(topic, partition).leader_id)

    def wait_for(self, condition: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = condition()
                if last:
                    return last
            except (grpc.RpcError, AssertionError, StopIteration) as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"{what} not met within {timeout_s} s (last: {last})")

    def wait_for_leader(self, topic: str, partition: int = 0, *, not_in: tuple[int, ...] = (),
                        timeout_s: float = 20.0) -> ClusterBroker:
        def elected() -> ClusterBroker | None:
            state = self.partition(topic, partition)
            if state.leader_id >= 0 and state.leader_id not in not_in and self.broker(state.leader_id).running:
                return self.broker(state.leader_id)
            return None

        return self.wait_for(elected, timeout_s, f"a leader of {topic}/{partition} outside {not_in}")

    def internal_topic(self, name: str) -> cluster_pb2.TopicMetadata:
        """Internal topic ``name`` once every partition is led by a running broker with a full
        ISR (every running broker, up to 3)."""
        def ready() -> cluster_pb2.TopicMetadata | None:
            (topic,) = self.metadata([name]).topics
            if topic.HasField("error") or not topic.partitions:
                return None
            running = {b.broker_id for b in self.running()}
            if all(p.leader_id in running and len(p.isr) >= min(3, len(running)) for p in topic.partitions):
                return topic
            return None

        return self.wait_for(ready, what=f"{name} led and in sync")

    def wait_for_isr(self, topic: str, partition: int, size: int, timeout_s: float = 20.0) -> list[int]:
        def isr() -> list[int] | None:
            members = list(self.partition(topic, partition).isr)
            return members if len(members) == size else None

        return self.wait_for(isr, timeout_s, f"an ISR of {size} for {topic}/{partition}")

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 3, **config: str) -> None:
        """Create it, then wait until every running broker's metadata has every partition's
        leader (brokers follow etcd independently: the one that answered CreateTopic may know
        before the others do; a client would retry UNKNOWN_TOPIC / NOT_LEADER meanwhile)."""
        with self.channel(self.running()[0].address) as channel:
            stub = logstore_pb2_grpc.LogStoreStub(channel)
            stub.CreateTopic(
                admin_pb2.CreateTopicRequest(
                    name=name, partitions=partitions, replication_factor=replication_factor, config=config
                ),
                timeout=30,
            )
        for broker in self.running():
            self.wait_for(
                lambda b=broker: all(  # type: ignore[misc]
                    p.leader_id >= 0 for p in self.metadata([name], via=b).topics[0].partitions
                ) and len(self.metadata([name], via=b).topics[0].partitions) == partitions,
                what=f"{name}'s leaders known to broker {broker.broker_id}",
            )

    def wait_for_members(self) -> None:
        """Every running broker's metadata lists every running broker."""
        ids = {b.broker_id for b in self.running()}
        for broker in self.running():
            self.wait_for(
                lambda b=broker: {x.broker_id for x in self.metadata(via=b).brokers} >= ids,  # type: ignore[misc]
                what=f"broker {broker.broker_id} seeing every broker",
            )

    def kill(self) -> None:
        for broker in self.brokers:
            broker.kill()


@pytest.fixture
def cluster_factory(tmp_path: Path, etcd_factory: Any) -> Iterator[Callable[..., LogstoreCluster]]:
    with logstore_clusters(tmp_path, etcd_factory) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory: pytest.TempPathFactory,
                           module_etcd_factory: Any) -> Iterator[Callable[..., LogstoreCluster]]:
    """``cluster_factory`` for a module-scoped cluster that a module's tests share."""
    with logstore_clusters(tmp_path_factory.mktemp("cluster"), module_etcd_factory) as factory:
        yield factory


@contextmanager
def logstore_clusters(tmp_path: Path, etcd_factory: Any) -> Iterator[Callable[..., LogstoreCluster]]:
    """A factory of started clusters with their brokers under ``tmp_path``, killed on exit."""
    started: list[LogstoreCluster] = []

    def factory(brokers: int = 3, etcd_members: int = 1, security_file: Path | None = None,
                token: str = "", tls: Certificates | None = None, broker_args: tuple[str, ...] = (),
                **settings: Any) -> LogstoreCluster:
        """``tls``: every broker serves TLS with the server certificate (made for the brokers'
        addresses) and verifies the others with the CA; ``broker_args``: more `serve` options."""
        # broker i reaches etcd at 127.0.0.(30+i) and listens at 127.0.0.(10+i): nftables rules
        # on those two addresses cut one broker off from everything
        etcd = etcd_factory(size=etcd_members, client_aliases=[etcd_alias(b) for b in range(1, brokers + 1)])
        values = {"lease_ttl_ms": LEASE_TTL_MS, "replica_lag_time_ms": REPLICA_LAG_TIME_MS, **settings}
        credentials = None
        tls_args: list[str] = []
        if tls is not None:
            values["inter_broker_tls_ca"] = str(tls.ca)
            tls_args = ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
            credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
        index = len(started)
        config = tmp_path / f"cluster{index}.toml"
        config.write_text(LOG_LEVEL + "[cluster_settings]\n" + "".join(
            f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n" for k, v in values.items()
        ))
        members = []
        for broker_id in range(1, brokers + 1):
            host = f"127.0.0.{10 + broker_id}"
            member = ClusterBroker(
                tmp_path / f"c{index}-broker{broker_id}", host, broker_id,
                ["--cluster", f"etcd://{etcd.endpoints_via(etcd_alias(broker_id))}", "--broker-id", str(broker_id),
                 "--cluster-name", f"test{index}"]
                + (["--security-file", str(security_file)] if security_file else []) + tls_args
                + list(broker_args),
                config,
            )
            member.port = free_port()
            members.append(member)
        for member in members:
            member.start(wait=False)
        for member in members:
            member.wait_ready(credentials=credentials)
        cluster = LogstoreCluster(etcd, members, token, credentials)
        started.append(cluster)
        cluster.wait_for(lambda: cluster.metadata().controller_id > 0, what="a controller")
        cluster.wait_for_members()
        return cluster

    try:
        yield factory
    finally:
        for cluster in started:
            cluster.kill()
