"""What the cluster keeps in etcd, and its key layout (prefix ``/logstore/<cluster>/``)::

    brokers/<id>               {"address": "127.0.0.2:7070", "shutting_down": false,
                               "replica_address": "127.0.0.2:40123", "stream_port": 40124}
                               (replica_address: the replica data channel, stream_port: the
                               Subscribe data channel's port, each absent if none; under the
                               broker's lease: it disappears when the broker dies; created anew
                               at every start, so its create revision tells incarnations apart)
    controller                 {"broker_id": 2}   (under the controller's lease; its create
                               revision is the controller epoch)
    topics/<name>              {"partitions": 3, "replication_factor": 3, "config": {...},
                               "min_insync_replicas": 2, "unclean_leader_election": false,
                               "assignment": [[1, 2, 3], [2, 3, 1], [3, 1, 2]]}
    partitions/<name>/<p>      {"leader": 1, "leader_epoch": 4, "isr": [1, 2],
                               "controller_epoch": 17}
    share_groups/<group>       a share group's config, as ``broker/share/config.py`` writes it
                               (``{"lock_ms": 30000, "max_deliveries": 5, ...}``)

Values are JSON. Only the controller writes leaders and leader epochs, each write an etcd
transaction that compares the controller key's create revision with its epoch (a deposed
controller changes nothing) and the partition key's mod revision with the one it read (no lost
update). A partition's leader writes its ISR the same way, comparing the mod revision: a leader
deposed meanwhile finds the revision moved and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BrokerRecord:
    broker_id: int
    address: str
    shutting_down: bool = False
    #: The etcd revision that created the key: each start of the broker registers anew, so a
    #: partition state written before it was granted to an earlier incarnation (not encoded).
    registered_revision: int = 0
    #: host:port of the broker's replica data channel ("": none, fetch from it over gRPC).
    replica_address: str = ""
    #: Port of the broker's Subscribe data channel on its address's host (0: none).
    stream_port: int = 0

    def encode(self) -> bytes:
        value: dict[str, object] = {"address": self.address, "shutting_down": self.shutting_down}
        if self.replica_address:
            value["replica_address"] = self.replica_address
        if self.stream_port:
            value["stream_port"] = self.stream_port
        return json.dumps(value).encode()

    @classmethod
    def decode(cls, broker_id: int, data: bytes, registered_revision: int = 0) -> BrokerRecord:
        value = json.loads(data)
        return cls(broker_id, value["address"], bool(value.get("shutting_down", False)), registered_revision,
                   str(value.get("replica_address", "")), int(value.get("stream_port", 0)))


@dataclass(frozen=True)
class TopicRecord:
    name: str
    partitions: int
    replication_factor: int
    assignment: list[list[int]]
    config: dict[str, str] = field(default_factory=dict)
    min_insync_replicas: int = 1
    unclean_leader_election: bool = False

    def encode(self) -> bytes:
        return json.dumps({
            "partitions": self.partitions, "replication_factor": self.replication_factor,
            "assignment": self.assignment, "config": self.config,
            "min_insync_replicas": self.min_insync_replicas,
            "unclean_leader_election": self.unclean_leader_election,
        }).encode()

    @classmethod
    def decode(cls, name: str, data: bytes) -> TopicRecord:
        value: dict[str, Any] = json.loads(data)
        return cls(
            name, int(value["partitions"]), int(value["replication_factor"]),
            [[int(b) for b in replicas] for replicas in value["assignment"]],
            {str(k): str(v) for k, v in value.get("config", {}).items()},
            int(value.get("min_insync_replicas", 1)), bool(value.get("unclean_leader_election", False)),
        )


@dataclass(frozen=True)
class PartitionState:
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0

    def encode(self) -> bytes:
        return json.dumps({
            "leader": self.leader, "leader_epoch": self.leader_epoch, "isr": list(self.isr),
            "controller_epoch": self.controller_epoch,
        }).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        value = json.loads(data)
        return cls(
            int(value["leader"]), int(value["leader_epoch"]), tuple(int(b) for b in value["isr"]),
            int(value.get("controller_epoch", 0)),
        )


class Keys:
    """Key names under one cluster's prefix."""

    def __init__(self, cluster_name: str) -> None:
        self.prefix = f"/logstore/{cluster_name}/"
        self.brokers = self.prefix + "brokers/"
        self.controller = self.prefix + "controller"
        self.topics = self.prefix + "topics/"
        self.partitions = self.prefix + "partitions/"
        self.producer_id_block = self.prefix + "producer_id_block"
        self.share_groups = self.prefix + "share_groups/"

    def broker(self, broker_id: int) -> str:
        return f"{self.brokers}{broker_id}"

    def topic(self, name: str) -> str:
        return self.topics + name

    def share_group(self, group_id: str) -> str:
        return self.share_groups + group_id

    def partition(self, topic: str, partition: int) -> str:
        return f"{self.partitions}{topic}/{partition}"
