"""Failover time: from a partition leader's SIGKILL to the next acknowledged ``acks=all`` produce
on that partition.

A topic of 3 partitions, replication factor 3, ``min_insync_replicas=2``. Kill ``k`` takes
partition ``k % 3``: its leader gets one acknowledged batch (the partition works), then SIGKILL;
from that moment a probe in the harness asks a surviving broker's ``Metadata`` for the
partition's leader every ``PROBE_INTERVAL_S`` and, once a live broker is named, sends it one
100 B batch with ``acks=all`` (a raw ``Produce`` call, ``PROBE_TIMEOUT_S`` deadline), again until
one is acknowledged. The time of that acknowledgement is the sample; the time the new leader
first appeared in the metadata is kept too. The killed broker is then started again on its
data directory and the next kill waits until every partition has all 3 replicas in its ISR.

The brokers' membership lease is ``servers.LEASE_TTL_MS`` (test speed): a dead leader is noticed
when its lease expires, so that TTL is most of every sample.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.cluster.servers import HostServer, LogstoreCluster, wait_for

PROBE_INTERVAL_S = 0.01
PROBE_TIMEOUT_S = 2.0
#: A kill whose partition acknowledges nothing within this long fails the suite.
GIVE_UP_S = 60.0
PARTITIONS = 3


@dataclass(frozen=True)
class Kill:
    partition: int
    killed_broker: int
    was_controller: bool
    new_leader: int
    #: Seconds from the SIGKILL until the metadata named another leader, and until the first
    #: acknowledged acks=all produce on the partition (the sample).
    elected_s: float
    acknowledged_s: float
    #: Seconds from the restart until every partition had 3 replicas in its ISR again.
    rejoined_s: float


class Probe:
    """Raw ``Produce`` calls to named brokers, one channel per broker (reconnects by itself)."""

    def __init__(self, cluster: LogstoreCluster, topic: str) -> None:
        from logstore.records import encode_batch

        self.cluster = cluster
        self.topic = topic
        self.batch = encode_batch([b"x" * 100])
        self._channels: dict[int, Any] = {}

    def _stub(self, broker: HostServer) -> Any:
        import grpc

        from logstore.api.v1 import logstore_pb2_grpc

        if broker.broker_id not in self._channels:
            self._channels[broker.broker_id] = grpc.insecure_channel(broker.address)
        return logstore_pb2_grpc.LogStoreStub(self._channels[broker.broker_id])

    def produce(self, partition: int, broker: HostServer) -> str:
        """'' when acknowledged with acks=all, else why not (an error reason or status)."""
        import grpc

        from logstore.api.v1 import records_pb2

        request = records_pb2.ProduceRequest(acks=records_pb2.ACKS_ALL, partitions=[
            records_pb2.PartitionRecords(topic=self.topic, partition=partition,
                                         records=self.batch)])
        try:
            response = self._stub(broker).Produce(request, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            return str(exc.code())
        return str(response.results[0].error.reason)

    def leader(self, partition: int) -> int:
        """The partition's leader as a running broker's metadata names it (-1: none, or no
        answer)."""
        for broker in self.cluster.running():
            try:
                state = self.cluster.partitions(self.topic, via=broker)[partition]
            except RuntimeError:
                continue
            return int(state.leader_id)
        return -1

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def measure(cluster: LogstoreCluster, kills: int, progress: Any) -> list[Kill]:
    topic = f"bc-failover-{uuid.uuid4().hex[:6]}"
    cluster.create_topic(topic, PARTITIONS, 3, {"min_insync_replicas": "2"})
    probe = Probe(cluster, topic)
    done: list[Kill] = []
    try:
        for index in range(kills):
            progress.start(f"failover: SIGKILL {index + 1} of {kills}")
            done.append(_one(cluster, probe, index % PARTITIONS))
            progress.done()
    finally:
        probe.close()
    cluster.delete_topic(topic)
    return done


def _one(cluster: LogstoreCluster, probe: Probe, partition: int) -> Kill:
    leader = cluster.broker(cluster.partitions(probe.topic)[partition].leader_id)
    before = probe.produce(partition, leader)
    if before:
        raise RuntimeError(f"{probe.topic}/{partition}: its leader {leader.broker_id} refused a "
                           f"produce before the kill: {before}")
    was_controller = cluster.metadata().controller_id == leader.broker_id
    killed = time.monotonic()
    leader.kill()
    elected_s = acknowledged_s = 0.0
    new_leader = -1
    last = ""
    while not acknowledged_s:
        now = time.monotonic()
        if now - killed > GIVE_UP_S:
            raise RuntimeError(f"{probe.topic}/{partition}: nothing acknowledged within "
                               f"{GIVE_UP_S:.0f} s of killing broker {leader.broker_id} "
                               f"(last answer: {last or 'no leader named'})")
        named = probe.leader(partition)
        if named >= 0 and named != leader.broker_id:
            new_leader = named
            elected_s = elected_s or now - killed
            last = probe.produce(partition, cluster.broker(named))
            if not last:
                acknowledged_s = time.monotonic() - killed
                break
        time.sleep(PROBE_INTERVAL_S)
    restarted = time.monotonic()
    cluster.restart(leader)
    wait_for(lambda: cluster.full_isr(probe.topic, 3),
             f"broker {leader.broker_id} back in every ISR of {probe.topic}",
             servers=tuple(cluster.brokers))
    return Kill(partition, leader.broker_id, was_controller, new_leader, elected_s,
                acknowledged_s, time.monotonic() - restarted)


def kills_json(kills: Sequence[Kill]) -> list[dict[str, Any]]:
    return [asdict(kill) for kill in kills]
