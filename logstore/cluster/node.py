"""One broker's part in a cluster: its membership, the metadata it follows, the controller it may
become, and its replicas — wired to the broker through its replication hooks.

Start (after the gRPC server listens, so that others can fetch from it at once):

1. grant a lease (``lease_ttl_ms``) and register ``brokers/<id>`` under it, created anew (an old
   key of an earlier incarnation is deleted first), kept alive every TTL/3;
2. load the metadata and watch it; every change reconciles the replicas (leader or follower);
3. campaign for the controller.

A lease etcd says is gone (it expired while the broker was paused or cut off) fences the broker
at once — it answers NOT_LEADER for everything it led — and it registers again, anew. Renewals
that merely go unanswered (etcd unreachable or without quorum, where etcd expires nothing) change
nothing: leaders keep leading and serving, the broker keeps renewing, and metadata changes (topic
creation, elections) wait, failing with METADATA_UNAVAILABLE. A leader cut off from everyone is
deposed by the others' controller; it cannot acknowledge acks=all any more (its followers fetch
from the new leader, so its high watermark stands still) and its acks=all requests time out.

Controlled shutdown (SIGTERM): the broker marks itself ``shutting_down``; the controller moves its
leaderships to other ISR members and takes it out of the ISRs; once it leads nothing (or after
``controlled_shutdown_timeout_ms``) it revokes its lease and stops.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from logstore.api.v1 import cluster_pb2
from logstore.broker import Broker
from logstore.broker.internal import OFFSETS_TOPIC, TRANSACTIONS_TOPIC, partition_for
from logstore.broker.producer_ids import ProducerIdPool
from logstore.broker.share.leadership import ShareCluster, state_topic
from logstore.cluster import topic_admin
from logstore.cluster.config import ClusterConfig
from logstore.cluster.controller import Controller
from logstore.cluster.etcd import Compare, EtcdClient, EtcdError, Op
from logstore.cluster.fetcher import FetcherManager
from logstore.cluster.internal_topics import (
    ensure_internal_topics,
    ensure_share_state_topic,
    replicated_internal_topics,
)
from logstore.cluster.metadata import MetadataCache
from logstore.cluster.placement import assign_replicas
from logstore.cluster.producer_ids import ProducerIdBlocks
from logstore.cluster.records import BrokerRecord, Keys, PartitionState, TopicRecord
from logstore.cluster.replicas import ReplicaManager, Role
from logstore.cluster.topic_config import split_topic_config
from logstore.cluster.txn_markers import MarkerSender
from logstore.errors import (
    CoordinatorNotAvailableError,
    InvalidConfigError,
    InvalidRequestError,
    LimitExceededError,
    MetadataUnavailableError,
    RequestTimeoutError,
    TopicExistsError,
    UnknownTopicError,
)
from logstore.storage import TopicDescription, validate_topic_name

log = logging.getLogger(__name__)

#: Each step of leaving the cluster gets this long at shutdown.
STOP_STEP_S = 2.0

#: CreateTopic waits this long for every partition to have a leader known here.
CREATE_WAIT_S = 15.0


class ClusterNode:
    def __init__(self, broker: Broker, config: ClusterConfig) -> None:
        self.broker = broker
        self.config = config
        self.broker_id = config.broker_id
        self.keys = Keys(config.cluster_name)
        self.etcd = EtcdClient(config.etcd_endpoints)
        self.metadata = MetadataCache(self.etcd, self.keys)
        self.replicas = ReplicaManager(broker, config.broker_id, self, config.replica_lag_time_ms)
        self.fetchers = FetcherManager(
            broker, config.broker_id, self.replicas, self.metadata.address, self.metadata.replica_address,
            max_wait_ms=config.replica_fetch_max_wait_ms, max_bytes=config.replica_fetch_max_bytes,
            token=config.inter_broker_token, tls_ca=config.inter_broker_tls_ca,
        )
        self.replicas.fetchers = self.fetchers
        self.producer_ids = ProducerIdBlocks(self.etcd, self.keys.producer_id_block, config.broker_id, ProducerIdPool())
        self.internal_topics = replicated_internal_topics(broker.offsets.partitions)
        self.txn_markers = MarkerSender(self)
        self.controller = Controller(self.etcd, self.keys, self.metadata, config.broker_id, self.internal_topics)
        self._creating_internal: asyncio.Task[None] | None = None
        self._creating_share_state: dict[str, asyncio.Task[None]] = {}
        self._share_configs: dict[str, dict[str, object]] = {}
        self.lease_id = 0
        self._keepalive: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._shutting_down = False
        self._reregistering: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.broker.replication = self.replicas
        self.broker.offsets.leadership = lambda partition: self.replicas.leader_epoch(OFFSETS_TOPIC, partition)
        self.broker.transactions.id_pool = self.producer_ids.pool
        self.broker.transactions.leadership = lambda: self.replicas.leader_epoch(TRANSACTIONS_TOPIC, 0)
        self.broker.transactions.marker_sender = self.txn_markers.send
        self.broker.shares.attach(ShareCluster(
            self.broker.data_dir, self.replicas, self._ensure_share_state, self._store_share_config))
        await self._register()
        await self.metadata.start()
        self.metadata.listeners.append(self._reconcile)
        self._reconcile()
        self.controller.start(self.lease_id)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._housekeep()))
        log.info("joined the cluster", extra={
            "cluster": self.config.cluster_name, "broker_id": self.broker_id,
            "advertise": self.config.advertise, "etcd": self.config.etcd_endpoints,
        })

    async def _register(self) -> None:
        ttl_s = max(1, round(self.config.lease_ttl_ms / 1000))
        record = BrokerRecord(self.broker_id, self.config.advertise, self._shutting_down,
                              replica_address=self.config.replica_address,
                              stream_port=self.config.stream_port)
        key = self.keys.broker(self.broker_id)
        self.lease_id = await self.etcd.grant(ttl_s)
        await self.etcd.delete(key)  # an earlier incarnation's key: register anew
        result = await self.etcd.txn(
            [Compare.create_revision(key) == 0], [Op.put(key, record.encode(), lease_id=self.lease_id)], []
        )
        if not result.succeeded:
            raise InvalidConfigError(
                f"broker id {self.broker_id} is registered by another live broker",
                key="broker_id", value=self.broker_id,
            )
        self.replicas.registered_revision = int(result.revision)
        self._keepalive = self.etcd.keep_alive(self.lease_id, ttl_s, self._lease_lost)

    def _lease_lost(self) -> None:
        if self._shutting_down:
            return
        self.controller.epoch = 0  # campaign again: etcd recognises our own key if we still hold it
        if not getattr(self._keepalive, "confirmed_lost", True):
            # renewals went unanswered (etcd unreachable or without quorum): etcd expires no lease
            # without a leader, so keep leading — followers still fetch, acks=all still needs
            # them — and keep renewing the same lease
            log.warning("cannot renew the membership lease (etcd unreachable or without quorum); retrying")
            ttl_s = max(1, round(self.config.lease_ttl_ms / 1000))
            self._keepalive = self.etcd.keep_alive(self.lease_id, ttl_s, self._lease_lost)
            return
        log.error("lost the membership lease: leading nothing until registered again")
        self.replicas.fence()
        if self._reregistering is None or self._reregistering.done():
            self._reregistering = asyncio.get_running_loop().create_task(self._register_again())

    async def _register_again(self) -> None:
        delay = 0.1
        while not self._shutting_down:
            try:
                if self._keepalive is not None:
                    await self._keepalive.stop()
                await self._register()
                self.replicas.unfence()
                self.controller.new_lease(self.lease_id)
                log.info("registered again", extra={"lease": self.lease_id})
                self._reconcile()
                return
            except Exception as exc:
                log.warning("registering again failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _reconcile(self) -> None:
        self.replicas.reconcile(self.metadata.topics, self.metadata.partitions, self.metadata.live_brokers())
        if self.metadata.share_configs != self._share_configs:
            self._share_configs = {k: dict(v) for k, v in self.metadata.share_configs.items()}
            self.broker.shares.set_configs(dict(self._share_configs))

    # -- share groups (broker/share/leadership.py) -------------------------------------------------

    def _ensure_share_state(self, topic: str) -> None:
        """Create ``__share_state.<topic>`` in the background (a share fetch found it missing)."""
        task = self._creating_share_state.get(topic)
        if task is None or task.done():
            self._creating_share_state[topic] = asyncio.get_running_loop().create_task(
                self._create_share_state(topic))

    async def _create_share_state(self, topic: str) -> None:
        try:
            await ensure_share_state_topic(self.etcd, self.keys, self.metadata, topic)
        except Exception as exc:
            log.warning("creating the share state topic of %s failed: %s", topic, exc)

    async def _store_share_config(self, group_id: str, config: dict[str, object] | None) -> None:
        key = self.keys.share_group(group_id)
        try:
            if config is None:
                await self.etcd.delete(key)
            else:
                await self.etcd.put(key, json.dumps(config).encode())
        except EtcdError as exc:
            raise MetadataUnavailableError(
                f"cannot store share group {group_id!r}'s config: the metadata store is unavailable ({exc})"
            ) from exc

    async def _housekeep(self) -> None:
        interval_s = max(self.config.replica_lag_time_ms / 4000, 0.05)
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.replicas.shrink_lagging()
            except Exception:
                log.exception("ISR maintenance failed")

    async def shutdown(self) -> None:
        """Controlled shutdown: hand leaderships over, then leave the cluster."""
        self._shutting_down = True
        if self.lease_id and not self.replicas.fenced:
            try:
                record = BrokerRecord(self.broker_id, self.config.advertise, True,
                                      replica_address=self.config.replica_address,
                                      stream_port=self.config.stream_port)
                await self.etcd.put(self.keys.broker(self.broker_id), record.encode(), lease_id=self.lease_id)
                deadline = asyncio.get_running_loop().time() + self.config.controlled_shutdown_timeout_ms / 1000
                while (self.replicas.leads() and self._successors_exist()
                       and asyncio.get_running_loop().time() < deadline):
                    await asyncio.sleep(0.05)
                if self.replicas.leads():
                    log.warning("still leading %d partition(s) at shutdown", len(self.replicas.leads()))
            except Exception as exc:
                log.warning("controlled shutdown could not hand over leaderships: %s", exc)
        await self.stop()

    def _successors_exist(self) -> bool:
        """Whether some partition this broker leads has another live, not shutting down ISR
        member to take it over (else waiting for the controller is pointless)."""
        brokers = self.metadata.brokers
        for topic, partition in self.replicas.leads():
            state = self.metadata.state(topic, partition)
            if state is not None and any(
                b != self.broker_id and b in brokers and not brokers[b].shutting_down for b in state.isr
            ):
                return True
        return False

    async def stop(self) -> None:
        """Leave the cluster: stop every task, revoke the lease (so that the others see this
        broker gone at once), close etcd. Each step is bounded: shutdown never hangs on it."""
        self._shutting_down = True
        for task in [*self._tasks, *self._creating_share_state.values()]:
            task.cancel()
        if self._reregistering is not None:
            self._reregistering.cancel()
        if self._creating_internal is not None:
            self._creating_internal.cancel()
        steps: list[tuple[str, Any]] = [
            ("controller", self.controller.stop), ("transaction markers", self.txn_markers.stop),
            ("fetchers", self.fetchers.stop),
            ("metadata watch", self.metadata.stop),
        ]
        if self._keepalive is not None:
            steps.append(("lease keepalive", self._keepalive.stop))
        if self.lease_id:
            steps.append(("lease revoke", lambda: self.etcd.revoke(self.lease_id)))
        steps.append(("etcd client", self.etcd.close))
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), STOP_STEP_S)
            except Exception as exc:
                log.warning("leaving the cluster: %s did not stop cleanly (%r)", name, exc)

    # -- metadata writes -------------------------------------------------------------------------

    async def write_isr(self, topic: str, partition: int, state: PartitionState, mod_revision: int) -> int | None:
        """The leader's ISR change, if the partition's key is still at ``mod_revision``; returns
        the new revision, or None when it moved (the leader re-reads)."""
        key = self.keys.partition(topic, partition)
        current = self.metadata.state(topic, partition)
        # a member that restarted since the state was written keeps no stale place in the ISR
        # (it rejoins by catching up, which the leader adds here like any other)
        restarted = {
            b for b, record in self.metadata.brokers.items()
            if record.registered_revision > mod_revision and b != self.broker_id
            and current is not None and b in current.isr
        }
        isr = tuple(b for b in state.isr if b not in restarted)
        controller_epoch = current.controller_epoch if current else 0
        new = PartitionState(state.leader, state.leader_epoch, isr, controller_epoch)
        result = await self.etcd.txn(
            [Compare.mod_revision(key) == mod_revision], [Op.put(key, new.encode())], []
        )
        return int(result.revision) if result.succeeded else None

    async def create_topic(self, name: str, partitions: int, replication_factor: int,
                           config: dict[str, str]) -> TopicDescription:
        validate_topic_name(name)
        if name.startswith("__"):
            raise InvalidRequestError(f"topic names starting with __ are internal: {name!r}", field="name")
        live = sorted(b for b, r in self.metadata.brokers.items() if not r.shutting_down)
        factor = replication_factor or min(self.config.default_replication_factor, len(live))
        storage, min_isr, unclean = split_topic_config(config, factor)
        limits = self.broker.data_dir.limits
        if partitions > limits.max_partitions_per_topic:
            raise LimitExceededError(
                f"{partitions} partitions exceed max_partitions_per_topic={limits.max_partitions_per_topic}",
                limit_name="max_partitions_per_topic", limit=limits.max_partitions_per_topic,
            )
        if sum(1 for t in self.metadata.topics if not t.startswith("__")) >= limits.max_topics:
            raise LimitExceededError(
                f"max_topics={limits.max_topics} reached", limit_name="max_topics", limit=limits.max_topics
            )
        assignment = assign_replicas(name, partitions, factor, live)
        record = TopicRecord(name, partitions, factor, assignment, storage, min_isr, unclean)
        key = self.keys.topic(name)
        try:
            result = await self.etcd.txn([Compare.create_revision(key) == 0], [Op.put(key, record.encode())], [])
        except EtcdError as exc:
            raise MetadataUnavailableError(f"cannot create topic {name!r}: the metadata store is unavailable ({exc})") from exc
        if not result.succeeded:
            raise TopicExistsError(name)
        await self._wait_for_leaders(name, partitions)
        return self.broker.data_dir.describe_topic(name)

    async def _wait_for_leaders(self, name: str, partitions: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CREATE_WAIT_S
        while loop.time() < deadline:
            states = [self.metadata.state(name, p) for p in range(partitions)]
            if all(s is not None and s.leader >= 0 for s in states) and self.broker.data_dir.has_topic(name):
                # (every broker creates the topic's directory, replicas or not: see replicas.py)
                return
            await asyncio.sleep(0.02)
        raise RequestTimeoutError(
            f"topic {name!r} was created, but not every partition had a leader within "
            f"{CREATE_WAIT_S:.0f} s (is a controller elected?)", topic=name,
        )

    async def alter_topic_config(self, name: str, set_keys: dict[str, str],
                                 reset_keys: list[str]) -> TopicDescription:
        return await topic_admin.alter_topic_config(self, name, set_keys, reset_keys)

    async def add_partitions(self, name: str, total: int) -> TopicDescription:
        return await topic_admin.add_partitions(self, name, total)

    def cluster_topic_config(self, name: str) -> dict[str, str]:
        """The topic config keys kept in its etcd record only, as DescribeTopic shows them."""
        record = self.metadata.topics.get(name)
        if record is None:
            return {}
        return {"min_insync_replicas": str(record.min_insync_replicas),
                "unclean_leader_election": str(record.unclean_leader_election).lower()}

    async def delete_topic(self, name: str) -> None:
        validate_topic_name(name)
        if name not in self.metadata.topics:
            raise UnknownTopicError(name)
        if name.startswith("__"):
            raise InvalidRequestError(f"internal topic {name!r} cannot be deleted", field="name")
        try:
            await self.etcd.delete(self.keys.topic(name))
            await self.etcd.delete_prefix(self.keys.partitions + name + "/")
            if state_topic(name) in self.metadata.topics:  # its share groups' state goes with it
                await self.etcd.delete(self.keys.topic(state_topic(name)))
                await self.etcd.delete_prefix(self.keys.partitions + state_topic(name) + "/")
        except EtcdError as exc:
            raise MetadataUnavailableError(f"cannot delete topic {name!r}: the metadata store is unavailable ({exc})") from exc

    # -- metadata reads --------------------------------------------------------------------------

    def under_replicated_partitions(self) -> int:
        """Partitions of the whole cluster whose ISR is smaller than their replica set."""
        count = 0
        for (name, partition), (state, _) in self.metadata.partitions.items():
            topic = self.metadata.topics.get(name)
            if topic is not None and partition < len(topic.assignment):
                count += len(state.isr) < len(topic.assignment[partition]) or state.leader < 0
        return count

    def find_coordinator(self, key_type: int, key: str) -> tuple[int, str]:
        """A group's coordinator is the leader of the ``__consumer_offsets`` partition the group
        hashes to (as on a single node), a transactional id's the leader of the
        ``__transaction_state`` partition it hashes to (it has one);
        ``CoordinatorNotAvailableError`` while it has none (or the topic is being created)."""
        brokers = self.metadata.brokers
        is_group = key_type == cluster_pb2.FindCoordinatorRequest.GROUP
        topic = OFFSETS_TOPIC if is_group else TRANSACTIONS_TOPIC
        record = self.metadata.topics.get(topic)
        if record is None:
            if self._creating_internal is None or self._creating_internal.done():
                self._creating_internal = asyncio.get_running_loop().create_task(self._create_internal())
            raise CoordinatorNotAvailableError(key, f"{topic} is being created")
        partition = partition_for(key, record.partitions)
        state = self.metadata.state(topic, partition)
        if state is None or state.leader not in brokers:
            raise CoordinatorNotAvailableError(key, f"{topic}/{partition} has no leader right now")
        return state.leader, brokers[state.leader].address

    async def _create_internal(self) -> None:
        try:
            await ensure_internal_topics(self.etcd, self.keys, self.metadata, self.internal_topics)
        except Exception as exc:
            log.warning("creating the internal topics failed: %s", exc)

    def metadata_response(self, names: list[str], include_internal: bool = False
                          ) -> tuple[cluster_pb2.MetadataResponse, list[str]]:
        """The cluster's metadata for ``names`` (every topic when empty; internal ones too with
        ``include_internal``), and the names asked for that do not exist (the server answers
        those with UNKNOWN_TOPIC entries)."""
        metadata = self.metadata
        if not metadata.loaded.is_set():
            raise MetadataUnavailableError("this broker is still joining the cluster")
        unknown: list[str] = []
        controller = metadata.controller or (-1, 0)
        response = cluster_pb2.MetadataResponse(
            clustered=True, cluster_name=self.config.cluster_name, broker_id=self.broker_id,
            controller_id=controller[0], controller_epoch=controller[1],
        )
        for broker_id, broker in sorted(metadata.brokers.items()):
            response.brokers.add(broker_id=broker_id, address=broker.address, alive=True,
                                 stream_port=broker.stream_port)
        wanted = names or sorted(t for t in metadata.topics if include_internal or not t.startswith("__"))
        for name in wanted:
            record = metadata.topics.get(name)
            if record is None:
                unknown.append(name)
                continue
            topic = response.topics.add(name=name, internal=name.startswith("__"))
            topic.replication_factor = record.replication_factor
            for partition, assigned in enumerate(record.assignment):
                state = metadata.state(name, partition)
                item = topic.partitions.add(partition=partition, replicas=assigned, leader_id=-1)
                if state is not None:
                    item.leader_id = state.leader
                    item.leader_epoch = state.leader_epoch
                    item.isr.extend(state.isr)
                replica = self.replicas.partitions.get((name, partition))
                if replica is not None and replica.role is Role.LEADER:
                    item.high_watermark = replica.high_watermark
        return response, unknown
