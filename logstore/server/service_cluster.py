"""The cluster RPCs of the LogStore service (a mixin of the service class in ``service.py``):
Metadata, FindCoordinator, and the replication calls brokers make to each other.

A single-node broker (``cluster is None``) answers Metadata and FindCoordinator as a cluster of
one: itself, the leader of every partition, epoch 0, ``clustered = false``. So one client works
against both; a client that sees ``clustered = false`` keeps using the address it bootstrapped
from. ReplicaFetch and EpochEndOffset on a single node are INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from logstore.api.v1 import cluster_pb2
from logstore.broker import Broker, txn_markers
from logstore.errors import InvalidRequestError, LogstoreError, UnknownTopicError
from logstore.server import wire
from logstore.server.auth import Authorizer
from logstore.server.errors import error_detail

#: The broker id a single-node broker reports.
SINGLE_NODE_ID = 0


class ClusterServiceMixin:
    broker: Broker
    authorizer: Authorizer
    #: The cluster node (``logstore.cluster``), or None on a single node.
    cluster: Any
    #: host:port this broker tells clients to use (the bound listen address on a single node).
    advertised: str
    stream_port: int
    #: The last ReplicaFetch response with records, and what it answered (see ReplicaFetch).
    _last_replica_response: tuple[tuple[Any, ...], bytes] | None = None

    async def _unary(self, method: str, context: Any, call: Any) -> Any:  # provided by the service
        raise NotImplementedError

    async def Metadata(self, request: cluster_pb2.MetadataRequest, context: Any) -> cluster_pb2.MetadataResponse:
        async def call() -> cluster_pb2.MetadataResponse:
            names = list(request.topics)
            if self.cluster is not None:
                response, unknown = self.cluster.metadata_response(names, request.include_internal)
                for name in unknown:
                    response.topics.add(name=name).error.CopyFrom(error_detail(UnknownTopicError(name)))
            else:
                response = self._single_node_metadata(names, request.include_internal)
            readable = [
                t for t in response.topics
                if t.HasField("error") or self.authorizer.can("topic", t.name, "describe")
            ]
            del response.topics[:]
            response.topics.extend(readable)
            return response

        return await self._unary("Metadata", context, call)

    def _single_node_metadata(self, names: list[str], include_internal: bool) -> cluster_pb2.MetadataResponse:
        response = cluster_pb2.MetadataResponse(
            clustered=False, broker_id=SINGLE_NODE_ID, controller_id=SINGLE_NODE_ID,
            brokers=[cluster_pb2.BrokerInfo(broker_id=SINGLE_NODE_ID, address=self.advertised, alive=True,
                                            stream_port=self.stream_port)],
        )
        listed = {name: (count, internal) for name, count, internal in self.broker.list_topics(True)}
        wanted = names or [n for n, (_, internal) in listed.items() if include_internal or not internal]
        for name in wanted:
            topic = response.topics.add(name=name)
            if name not in listed:
                topic.error.CopyFrom(error_detail(UnknownTopicError(name)))
                continue
            count, topic.internal = listed[name]
            topic.replication_factor = 1
            for partition in range(count):
                end = self.broker.data_dir.log(name, partition).log_end_offset
                topic.partitions.add(
                    partition=partition, leader_id=SINGLE_NODE_ID, leader_epoch=0,
                    replicas=[SINGLE_NODE_ID], isr=[SINGLE_NODE_ID], high_watermark=end,
                )
        return response

    async def FindCoordinator(
        self, request: cluster_pb2.FindCoordinatorRequest, context: Any
    ) -> cluster_pb2.FindCoordinatorResponse:
        async def call() -> cluster_pb2.FindCoordinatorResponse:
            if not request.key:
                raise InvalidRequestError("FindCoordinator needs a key", field="key")
            if self.cluster is not None:
                broker_id, address = self.cluster.find_coordinator(request.key_type, request.key)
                return cluster_pb2.FindCoordinatorResponse(broker_id=broker_id, address=address)
            return cluster_pb2.FindCoordinatorResponse(broker_id=SINGLE_NODE_ID, address=self.advertised)

        return await self._unary("FindCoordinator", context, call)

    async def ReplicaFetch(self, request: cluster_pb2.ReplicaFetchRequest, context: Any) -> bytes:
        """Answers the serialized response (``handlers.RAW_RESPONSES``): each partition's batches
        go from the segment into the response bytes in one copy (``wire``). Followers that fetch
        the same range with the same answer (the usual case: both followers of a partition are
        caught up) share one response: it is built once."""
        async def call() -> bytes:
            items, outcomes = await self.replica_fetch_outcomes(request)
            # a leader's log at one leader epoch only grows, so a range (offset, length) at
            # that epoch is the same bytes every time
            key = tuple((*item, len(o.records), o.high_watermark, o.log_start_offset, o.log_end_offset)
                        for item, o in zip(items, outcomes, strict=True))
            shared = self._last_replica_response
            if shared is not None and shared[0] == key:
                return shared[1]
            response = wire.encode_fetch_response(
                [wire.encode_fetched_partition(self.replica_fetched_partition(o), o.records) for o in outcomes]
            )
            if all(o.error is None for o in outcomes) and any(o.records for o in outcomes):
                self._last_replica_response = (key, response)
            return response

        return await self._unary("ReplicaFetch", context, call)

    async def replica_fetch_outcomes(
        self, request: cluster_pb2.ReplicaFetchRequest
    ) -> tuple[list[tuple[str, int, int, int]], list[Any]]:
        """A follower's fetch, whatever its transport (gRPC ReplicaFetch or the replica channel):
        the partitions asked for, and what each gets (``ReplicaFetchOutcome``)."""
        self._check_replica()
        items = [(p.topic, p.partition, p.fetch_offset, p.leader_epoch) for p in request.partitions]
        outcomes = await self.cluster.replicas.serve_fetch(
            request.replica_id, items, max_wait_ms=request.max_wait_ms,
            max_bytes=request.max_bytes or (8 << 20),
        )
        return items, outcomes

    @staticmethod
    def replica_fetched_partition(outcome: Any) -> cluster_pb2.ReplicaFetchedPartition:
        """An outcome's small fields (its records left out)."""
        small = cluster_pb2.ReplicaFetchedPartition(
            topic=outcome.topic, partition=outcome.partition, high_watermark=outcome.high_watermark,
            log_start_offset=outcome.log_start_offset, log_end_offset=outcome.log_end_offset,
        )
        if outcome.error is not None:
            small.error.CopyFrom(error_detail(outcome.error))
        return small

    async def EpochEndOffset(
        self, request: cluster_pb2.EpochEndOffsetRequest, context: Any
    ) -> cluster_pb2.EpochEndOffsetResponse:
        async def call() -> cluster_pb2.EpochEndOffsetResponse:
            self._check_replica()
            response = cluster_pb2.EpochEndOffsetResponse()
            for p in request.partitions:
                item = response.partitions.add(topic=p.topic, partition=p.partition, epoch=-1, end_offset=-1)
                try:
                    item.epoch, item.end_offset = self.cluster.replicas.epoch_end_offset(
                        p.topic, p.partition, p.requested_epoch, p.leader_epoch
                    )
                except LogstoreError as exc:
                    item.error.CopyFrom(error_detail(exc))
            return response

        return await self._unary("EpochEndOffset", context, call)

    async def WriteTxnMarkers(
        self, request: cluster_pb2.WriteTxnMarkersRequest, context: Any
    ) -> cluster_pb2.WriteTxnMarkersResponse:
        """Inter-broker: the transaction coordinator's markers for partitions led here; answered
        once they are replicated, with an error per partition not written (NOT_LEADER, ...)."""
        async def call() -> cluster_pb2.WriteTxnMarkersResponse:
            self._check_replica()
            partitions = [(p.topic, p.partition) for p in request.partitions]
            errors, written = txn_markers.write_here(
                self.broker, request.producer_id, request.producer_epoch, partitions, request.commit
            )
            await txn_markers.wait_written(self.broker, written, errors, partitions)
            response = cluster_pb2.WriteTxnMarkersResponse()
            for (topic, partition), error in zip(partitions, errors, strict=True):
                item = response.results.add(topic=topic, partition=partition)
                if error is not None:
                    item.error.CopyFrom(error_detail(error))
            return response

        return await self._unary("WriteTxnMarkers", context, call)

    def replica_fetch_allowed(self) -> None:
        """Raises unless this broker is clustered and the caller has the replica right."""
        self._check_replica()

    def _check_replica(self) -> None:
        if self.cluster is None:
            raise InvalidRequestError("this broker is not part of a cluster", field="replica_id")
        self.authorizer.check("cluster", "replication", "replica")  # a broker principal

