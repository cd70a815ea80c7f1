"""The consumer-group and transaction RPCs of the LogStore service (a mixin of the service
class in ``service.py``): protobuf in, one broker call, protobuf out."""

from __future__ import annotations

from typing import Any

from logstore.api.v1 import common_pb2, groups_pb2, transactions_pb2
from logstore.broker import Broker
from logstore.broker.types import OffsetInfo
from logstore.errors import ConcurrentTransactionsError, InvalidRequestError
from logstore.server.auth import Authorizer
from logstore.server.errors import error_detail

#: In a cluster EndTxn is answered once its markers are written, or after this long with the
#: retriable CONCURRENT_TRANSACTIONS (the client sends it again; the markers go on meanwhile).
END_TXN_WAIT_S = 10.0

_RESET = {
    groups_pb2.RESET_EARLIEST: "earliest",
    groups_pb2.RESET_LATEST: "latest",
    groups_pb2.RESET_OFFSET: "offset",
    groups_pb2.RESET_TIMESTAMP: "timestamp",
}


def _tps(items: Any) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in items]


def _tp_messages(items: list[tuple[str, int]]) -> list[common_pb2.TopicPartition]:
    return [common_pb2.TopicPartition(topic=t, partition=p) for t, p in items]


def _offsets(items: Any) -> list[tuple[str, int, int, str]]:
    result = []
    for o in items:
        if o.partition < 0:
            raise InvalidRequestError(f"partition of {o.topic!r} must not be negative", field="partition")
        result.append((o.topic, o.partition, o.offset, o.metadata))
    return result


def committed_offset(info: OffsetInfo) -> groups_pb2.CommittedOffset:
    message = groups_pb2.CommittedOffset(
        topic=info.topic,
        partition=info.partition,
        offset=info.offset,
        metadata=info.metadata,
        log_end_offset=info.log_end_offset,
        lag=info.lag,
        commit_timestamp_ms=info.commit_timestamp_ms,
    )
    if info.error is not None:
        message.error.CopyFrom(error_detail(info.error))
    return message


class GroupServiceMixin:
    broker: Broker
    authorizer: Authorizer

    async def _unary(self, method: str, context: Any, call: Any) -> Any:  # provided by the service
        raise NotImplementedError

    async def GroupHeartbeat(self, request: groups_pb2.GroupHeartbeatRequest, context: Any) -> groups_pb2.GroupHeartbeatResponse:
        async def call() -> groups_pb2.GroupHeartbeatResponse:
            self.authorizer.check("group", request.group_id, "read")
            for topic in request.topics:
                self.authorizer.check("topic", topic, "read")
            result = self.broker.group_heartbeat(
                request.group_id,
                request.member_id,
                request.member_epoch,
                instance_id=request.instance_id,
                topics=list(request.topics),
                assignor=request.assignor,
                session_timeout_ms=request.session_timeout_ms,
                rebalance_timeout_ms=request.rebalance_timeout_ms,
                owned=_tps(request.owned),
                ms_since_poll=request.ms_since_poll,
            )
            return groups_pb2.GroupHeartbeatResponse(
                member_id=result.member_id,
                member_epoch=result.member_epoch,
                heartbeat_interval_ms=result.heartbeat_interval_ms,
                assignment=_tp_messages(result.assignment),
            )

        return await self._unary("GroupHeartbeat", context, call)

    async def CommitOffsets(self, request: groups_pb2.CommitOffsetsRequest, context: Any) -> groups_pb2.CommitOffsetsResponse:
        async def call() -> groups_pb2.CommitOffsetsResponse:
            self.authorizer.check("group", request.group_id, "read")
            results = self.broker.commit_offsets(
                request.group_id, request.member_id, request.member_epoch, _offsets(request.offsets)
            )
            await self.broker.offsets_replicated(request.group_id)  # acks=all in a cluster
            response = groups_pb2.CommitOffsetsResponse()
            for topic, partition, error in results:
                item = response.results.add(topic=topic, partition=partition)
                if error is not None:
                    item.error.CopyFrom(error_detail(error))
            return response

        return await self._unary("CommitOffsets", context, call)

    async def FetchOffsets(self, request: groups_pb2.FetchOffsetsRequest, context: Any) -> groups_pb2.FetchOffsetsResponse:
        async def call() -> groups_pb2.FetchOffsetsResponse:
            self.authorizer.check("group", request.group_id, "read")
            infos = self.broker.fetch_offsets(request.group_id, _tps(request.partitions), request.require_stable)
            return groups_pb2.FetchOffsetsResponse(offsets=[committed_offset(i) for i in infos])

        return await self._unary("FetchOffsets", context, call)

    async def ListGroups(self, request: groups_pb2.ListGroupsRequest, context: Any) -> groups_pb2.ListGroupsResponse:
        async def call() -> groups_pb2.ListGroupsResponse:
            return groups_pb2.ListGroupsResponse(
                groups=[
                    groups_pb2.GroupSummary(group_id=g, state=s, members=m)
                    for g, s, m in self.broker.list_groups()
                    if self.authorizer.can("group", g, "read")
                ]
            )

        return await self._unary("ListGroups", context, call)

    async def DescribeGroup(self, request: groups_pb2.DescribeGroupRequest, context: Any) -> groups_pb2.GroupDescription:
        async def call() -> groups_pb2.GroupDescription:
            self.authorizer.check("group", request.group_id, "read")
            info = self.broker.describe_group(request.group_id)
            return groups_pb2.GroupDescription(
                group_id=info.group_id,
                state=info.state,
                assignor=info.assignor,
                group_epoch=info.group_epoch,
                members=[
                    groups_pb2.GroupMember(
                        member_id=m.member_id,
                        instance_id=m.instance_id,
                        member_epoch=m.member_epoch,
                        topics=m.topics,
                        assignment=_tp_messages(m.assignment),
                        revoking=_tp_messages(m.revoking),
                    )
                    for m in info.members
                ],
                offsets=[committed_offset(o) for o in info.offsets],
            )

        return await self._unary("DescribeGroup", context, call)

    async def DeleteGroup(self, request: groups_pb2.DeleteGroupRequest, context: Any) -> groups_pb2.DeleteGroupResponse:
        async def call() -> groups_pb2.DeleteGroupResponse:
            self.authorizer.check("group", request.group_id, "admin")
            self.broker.delete_group(request.group_id)
            await self.broker.offsets_replicated(request.group_id)
            return groups_pb2.DeleteGroupResponse()

        return await self._unary("DeleteGroup", context, call)

    async def ResetOffsets(self, request: groups_pb2.ResetOffsetsRequest, context: Any) -> groups_pb2.ResetOffsetsResponse:
        async def call() -> groups_pb2.ResetOffsetsResponse:
            spec = _RESET.get(request.spec)
            if spec is None:
                raise InvalidRequestError(f"unknown reset spec {request.spec}", field="spec")
            self.authorizer.check("group", request.group_id, "admin")
            infos = self.broker.reset_offsets(
                request.group_id, request.topic, list(request.partitions), spec,
                request.offset, request.timestamp_ms, request.dry_run,
            )
            await self.broker.offsets_replicated(request.group_id)
            return groups_pb2.ResetOffsetsResponse(offsets=[committed_offset(i) for i in infos])

        return await self._unary("ResetOffsets", context, call)

    # -- transactions -------------------------------------------------------------------------------

    async def InitProducerId(self, request: transactions_pb2.InitProducerIdRequest, context: Any) -> transactions_pb2.InitProducerIdResponse:
        async def call() -> transactions_pb2.InitProducerIdResponse:
            cluster = getattr(self, "cluster", None)
            if cluster is not None:
                await cluster.producer_ids.ensure()  # ids unique across the cluster (etcd blocks)
            producer_id, epoch = self.broker.init_producer_id(
                request.transactional_id, request.transaction_timeout_ms
            )
            if request.transactional_id:
                await self.broker.transactions_replicated(request.transactional_id)  # acks=all
            return transactions_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=epoch)

        return await self._unary("InitProducerId", context, call)

    async def AddPartitionsToTxn(self, request: transactions_pb2.AddPartitionsToTxnRequest, context: Any) -> transactions_pb2.AddPartitionsToTxnResponse:
        async def call() -> transactions_pb2.AddPartitionsToTxnResponse:
            for topic in {tp.topic for tp in request.partitions}:
                self.authorizer.check("topic", topic, "write")
            for group_id in request.group_ids:
                self.authorizer.check("group", group_id, "read")
            self.broker.add_partitions_to_txn(
                request.transactional_id, request.producer_id, request.producer_epoch,
                _tps(request.partitions), list(request.group_ids),
            )
            await self.broker.transactions_replicated(request.transactional_id)  # acks=all in a cluster
            return transactions_pb2.AddPartitionsToTxnResponse()

        return await self._unary("AddPartitionsToTxn", context, call)

    async def TxnOffsetCommit(self, request: transactions_pb2.TxnOffsetCommitRequest, context: Any) -> transactions_pb2.TxnOffsetCommitResponse:
        async def call() -> transactions_pb2.TxnOffsetCommitResponse:
            self.authorizer.check("group", request.group_id, "read")
            self.broker.txn_offset_commit(
                request.transactional_id, request.producer_id, request.producer_epoch,
                request.group_id, request.member_id, request.member_epoch, _offsets(request.offsets),
            )
            await self.broker.offsets_replicated(request.group_id)  # a cluster: staged, acks=all
            return transactions_pb2.TxnOffsetCommitResponse()

        return await self._unary("TxnOffsetCommit", context, call)

    async def EndTxn(self, request: transactions_pb2.EndTxnRequest, context: Any) -> transactions_pb2.EndTxnResponse:
        async def call() -> transactions_pb2.EndTxnResponse:
            self.broker.end_txn(request.transactional_id, request.producer_id, request.producer_epoch, request.commit)
            await self.broker.transactions_replicated(request.transactional_id)
            cluster = getattr(self, "cluster", None)
            if cluster is not None and not await cluster.txn_markers.wait(request.transactional_id, END_TXN_WAIT_S):
                # markers still on their way (or the coordinator moved): the client retries
                raise ConcurrentTransactionsError(request.transactional_id, "completing")
            return transactions_pb2.EndTxnResponse()

        return await self._unary("EndTxn", context, call)
