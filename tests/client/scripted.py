"""A scripted cluster for unit tests of routing logic: ``Metadata`` answers built from a dict the
test changes (which broker leads which partition), and produce streams that record what was sent
and are answered by the test. Integration tests use real brokers instead."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from logstore.api.v1 import cluster_pb2, records_pb2, transactions_pb2
from logstore.errors import UnavailableError

#: broker id -> address of the scripted cluster.
BROKERS = {1: "b1:7070", 2: "b2:7070", 3: "b3:7070"}


def metadata_response(leaders: dict[tuple[str, int], int], *, clustered: bool = True,
                      dead: frozenset[int] = frozenset(),
                      isr: dict[tuple[str, int], list[int]] | None = None,
                      brokers: dict[int, str] | None = None) -> cluster_pb2.MetadataResponse:
    """A MetadataResponse: ``leaders`` (topic, partition) -> leader id (-1: none)."""
    brokers = BROKERS if brokers is None else brokers
    response = cluster_pb2.MetadataResponse(clustered=clustered, controller_id=1, controller_epoch=9)
    for broker_id, address in brokers.items():
        response.brokers.add(broker_id=broker_id, address=address, alive=broker_id not in dead)
    topics: dict[str, Any] = {}
    for (topic, partition), leader in sorted(leaders.items()):
        if topic not in topics:
            topics[topic] = response.topics.add(name=topic, replication_factor=len(brokers))
        replicas = sorted(brokers)
        topics[topic].partitions.add(
            partition=partition, leader_id=leader, leader_epoch=1, replicas=replicas,
            isr=(isr or {}).get((topic, partition), replicas),
        )
    return response


class ScriptedCluster:
    """Stands where ``Channels`` stands: every address's stub is this object."""

    def __init__(self, leaders: dict[tuple[str, int], int]) -> None:
        self.leaders = dict(leaders)
        self.unreachable: set[str] = set()
        #: False: answer as a single-node broker (its one broker at ``single_address``).
        self.clustered = True
        self.single_address = "0.0.0.0:7070"
        self.metadata_calls: list[str] = []
        self._address = ""

    def stub(self, address: str) -> ScriptedCluster:
        self._address = address
        return self

    def channel(self, address: str) -> Any:
        raise AssertionError("scripted: no channels")

    def close(self) -> None:
        pass

    def Metadata(self, request: Any, timeout: float | None = None) -> cluster_pb2.MetadataResponse:  # noqa: N802
        self.metadata_calls.append(self._address)
        if self._address in self.unreachable:
            raise UnavailableError(f"cannot reach the broker at {self._address}")
        if not self.clustered:
            return metadata_response(self.leaders, clustered=False, brokers={0: self.single_address})
        return metadata_response(self.leaders)

    def InitProducerId(self, request: Any, timeout: float | None = None) -> Any:  # noqa: N802
        return transactions_pb2.InitProducerIdResponse(producer_id=7, producer_epoch=0)


class RecordingStream:
    """A produce stream to one scripted broker: keeps every request; ``answer`` resolves one."""

    def __init__(self, address: str, on_response: Callable[[Any, Any], None],
                 on_failure: Callable[[Any, Any], None]) -> None:
        self.address = address
        self.on_response = on_response
        self.on_failure = on_failure
        self.sent: list[tuple[int, records_pb2.ProduceRequest, list[Any]]] = []
        self._ids = iter(range(1, 1 << 30))
        self._lock = threading.Lock()

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, correlation_id: int, payload: bytes, context: Any) -> None:
        with self._lock:
            self.sent.append((correlation_id, records_pb2.ProduceRequest.FromString(payload), context))

    def wait_idle(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        pass

    def answer(self, index: int, results: dict[tuple[str, int], int | str]) -> None:
        """Answer request ``index``: per partition a base offset, or an error reason."""
        correlation_id, _request, batches = self.sent[index]
        response = records_pb2.ProduceResponse(correlation_id=correlation_id)
        for (topic, partition), outcome in results.items():
            result = response.results.add(topic=topic, partition=partition)
            if isinstance(outcome, str):
                result.base_offset = -1
                result.error.reason = outcome
                result.error.message = outcome.lower()
                if outcome == "NOT_LEADER":
                    result.error.metadata.update(topic=topic, partition=str(partition))
            else:
                result.base_offset = outcome
        self.on_response(batches, response)

