"""``Admin``: topics (create, delete, list, describe, configure, grow), offsets, consumer
groups (list, describe, delete, reset offsets, read committed offsets), share groups (list,
describe, configure, reset: ``share_admin.py``) and the cluster (``describe_cluster``).

Every method is one unary call; results are the small dataclasses of ``models``, never protobuf
messages, and failures are the typed errors of ``logstore.errors`` (see ``channel``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from logstore.api.v1 import admin_pb2, groups_pb2, logstore_pb2_grpc, records_pb2
from logstore.client.channel import (
    Channels,
    call_with_retries,
    error_from_detail,
    is_transient,
    translate_errors,
)
from logstore.client.config import Credentials, resolve_server
from logstore.client.metadata import Metadata
from logstore.client.models import (
    ClusterDescription,
    CommittedOffset,
    GroupDescription,
    GroupMember,
    GroupSummary,
    PartitionInfo,
    TopicDescription,
    TopicInfo,
    TopicPartition,
)
from logstore.client.routing import any_broker, group_coordinator
from logstore.client.share_admin import ShareAdminMixin
from logstore.errors import LogstoreError, NotLeaderError

#: Where ``reset_offsets`` moves a group: "earliest", "latest", an offset (int), or a time
#: (a datetime, or ``("timestamp", ms since the epoch)``).
ResetTarget = str | int | datetime.datetime | tuple[str, int]

#: What ``list_offsets`` can look up per partition.
OffsetQuery = str | int | datetime.datetime  # "earliest", "latest", ms since epoch, datetime

#: In a cluster, a group call whose coordinator moved (or is being elected) is retried this often.
GROUP_CALL_RETRIES = 5


class Admin(ShareAdminMixin):
    """Topic administration: ``Admin(server)``, as a context manager or with ``close()``.

    ``server`` may list several bootstrap addresses (``"h1:7070,h2:7070"``): the first call asks
    them in turn for metadata and talks to the first that answers; a broker that stops answering
    is left for the next one on the following call."""

    def __init__(self, server: str | None = None, *, timeout: float = 30.0, **credentials: Any) -> None:
        """``credentials``: ``tls_ca``, ``tls_cert``, ``tls_key``, ``token`` (see ``Credentials``)."""
        self.server = resolve_server(server)
        self.timeout = timeout
        self._channels = Channels(Credentials.take(credentials))
        if credentials:
            raise TypeError(f"unknown Admin options: {', '.join(sorted(credentials))}")
        self._metadata = Metadata(self.server, self._channels, retries=0, retry_backoff_ms=100.0,
                                  retry_backoff_max_ms=1000.0, timeout_s=timeout)
        self._stub: Any = any_broker(self._metadata)

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, object] | None = None,
        replication_factor: int | None = None,
    ) -> TopicDescription:
        """Create a topic. ``replication_factor``: copies of each partition on different brokers
        (a cluster only; None or 0 = the cluster's default; a single node accepts only 1)."""
        request = admin_pb2.CreateTopicRequest(
            name=name, partitions=partitions, config=_strings(config or {}),
            replication_factor=replication_factor or 0,
        )
        with translate_errors(self.server):
            return _description(self._stub.CreateTopic(request, timeout=self.timeout))

    def delete_topic(self, name: str) -> None:
        with translate_errors(self.server):
            self._stub.DeleteTopic(admin_pb2.DeleteTopicRequest(name=name), timeout=self.timeout)

    def list_topics(self, include_internal: bool = False) -> list[TopicInfo]:
        request = admin_pb2.ListTopicsRequest(include_internal=include_internal)
        with translate_errors(self.server):
            response = self._stub.ListTopics(request, timeout=self.timeout)
        return [TopicInfo(t.name, t.partitions, t.internal) for t in response.topics]

    def describe_topic(self, name: str) -> TopicDescription:
        request = admin_pb2.DescribeTopicRequest(name=name)
        with translate_errors(self.server):
            return _description(self._stub.DescribeTopic(request, timeout=self.timeout))

    def alter_config(
        self,
        name: str,
        set: Mapping[str, object] | None = None,  # noqa: A002 - the wire field's name
        reset: Iterable[str] = (),
    ) -> TopicDescription:
        """Set some config keys and reset others to the broker default."""
        request = admin_pb2.AlterTopicConfigRequest(
            name=name, set=_strings(set or {}), reset=list(reset)
        )
        with translate_errors(self.server):
            return _description(self._stub.AlterTopicConfig(request, timeout=self.timeout))

    def add_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow the topic to ``total`` partitions (more than it has)."""
        request = admin_pb2.AddPartitionsRequest(name=name, total=total)
        with translate_errors(self.server):
            return _description(self._stub.AddPartitions(request, timeout=self.timeout))

    def list_offsets(
        self,
        partitions: Iterable[TopicPartition | tuple[str, int]] | str,
        spec: OffsetQuery = "latest",
    ) -> dict[TopicPartition, int]:
        """The earliest or latest (log end) offset, or the first offset at or after a time
        (ms since the epoch or a datetime; the log end offset if no record is that new)."""
        if isinstance(partitions, str):
            topic = partitions
            partitions = [
                TopicPartition(topic, p.partition) for p in self.describe_topic(topic).partitions
            ]
        queries = {TopicPartition(*tp): spec for tp in partitions}
        return list_offsets_routed(self._metadata, queries, timeout=self.timeout)

    # -- consumer groups ---------------------------------------------------------------------------

    def list_groups(self) -> list[GroupSummary]:
        """Every group; in a cluster each broker lists the groups it coordinates, so every
        broker is asked (one that cannot be reached is skipped: its groups are moving)."""
        request = groups_pb2.ListGroupsRequest()
        if not self._metadata.routes_by_leader():
            with translate_errors(self.server):
                response = self._stub.ListGroups(request, timeout=self.timeout)
            return [GroupSummary(g.group_id, g.state, g.members) for g in response.groups]
        found: dict[str, GroupSummary] = {}
        for broker in self._metadata.refresh().brokers.values():
            try:
                with translate_errors(broker.address):
                    response = self._channels.stub(broker.address).ListGroups(request, timeout=self.timeout)
            except LogstoreError as exc:
                if not is_transient(exc):
                    raise
                continue
            for g in response.groups:
                found.setdefault(g.group_id, GroupSummary(g.group_id, g.state, g.members))
        return sorted(found.values(), key=lambda g: g.group_id)

    def _group_call(self, group_id: str, method: str, request: Any) -> Any:
        """A call to the group's coordinator (found again, and retried, when it moved)."""
        stub = group_coordinator(self._metadata, group_id)
        return call_with_retries(
            lambda: getattr(stub, method)(request, timeout=self.timeout), server=self.server,
            retries=GROUP_CALL_RETRIES if self._metadata.routes_by_leader() else 0,
            retry_backoff_ms=100.0, retry_backoff_max_ms=1000.0,
        )

    def describe_group(self, group_id: str) -> GroupDescription:
        """Members with their assignments, and per partition the committed offset, log end
        offset and lag. Raises ``UnknownGroupError`` for a group with no members or offsets."""
        message = self._group_call(group_id, "DescribeGroup", groups_pb2.DescribeGroupRequest(group_id=group_id))
        return GroupDescription(
            group_id=message.group_id,
            state=message.state,
            assignor=message.assignor,
            group_epoch=message.group_epoch,
            members=[
                GroupMember(
                    member_id=m.member_id,
                    instance_id=m.instance_id,
                    member_epoch=m.member_epoch,
                    topics=list(m.topics),
                    assignment=[TopicPartition(tp.topic, tp.partition) for tp in m.assignment],
                    revoking=[TopicPartition(tp.topic, tp.partition) for tp in m.revoking],
                )
                for m in message.members
            ],
            offsets=[_committed(o) for o in message.offsets],
        )

    def delete_group(self, group_id: str) -> None:
        """Forget a group and its committed offsets; ``GroupNotEmptyError`` while it has
        members."""
        self._group_call(group_id, "DeleteGroup", groups_pb2.DeleteGroupRequest(group_id=group_id))

    def fetch_committed(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]] = ()
    ) -> list[CommittedOffset]:
        """The group's committed offsets (of ``partitions``; default every partition it has
        committed), with log end offsets and lag."""
        request = groups_pb2.FetchOffsetsRequest(group_id=group_id)
        for topic, partition in partitions:
            request.partitions.add(topic=topic, partition=partition)
        response = self._group_call(group_id, "FetchOffsets", request)
        return [_committed(o) for o in response.offsets]

    def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: ResetTarget,
        partitions: Iterable[int] = (),
        dry_run: bool = False,
    ) -> list[CommittedOffset]:
        """Move an inactive group's committed offsets of ``topic`` (every partition, or
        ``partitions``) to "earliest", "latest", an offset, or the first record at or after a
        time (a datetime or ``("timestamp", ms)``). ``GroupNotEmptyError`` while it has
        members. Returns the new offsets (not committed with ``dry_run``)."""
        request = groups_pb2.ResetOffsetsRequest(
            group_id=group_id, topic=topic, partitions=list(partitions), dry_run=dry_run
        )
        if to == "earliest":
            request.spec = groups_pb2.RESET_EARLIEST
        elif to == "latest":
            request.spec = groups_pb2.RESET_LATEST
        elif isinstance(to, datetime.datetime):
            request.spec = groups_pb2.RESET_TIMESTAMP
            request.timestamp_ms = to_epoch_ms(to)
        elif isinstance(to, tuple) and len(to) == 2 and to[0] == "timestamp":
            request.spec = groups_pb2.RESET_TIMESTAMP
            request.timestamp_ms = int(to[1])
        elif isinstance(to, int) and not isinstance(to, bool):
            request.spec = groups_pb2.RESET_OFFSET
            request.offset = to
        else:
            raise ValueError(f"reset to 'earliest', 'latest', an offset, a datetime or "
                             f"('timestamp', ms), not {to!r}")
        response = self._group_call(group_id, "ResetOffsets", request)
        return [_committed(o) for o in response.offsets]

    # -- the cluster -------------------------------------------------------------------------------

    def describe_cluster(self) -> ClusterDescription:
        """The brokers (id, address, alive), the controller (id, epoch) and every partition's
        leader, leader epoch, replicas and ISR, internal topics included;
        ``under_replicated_partitions`` counts those whose ISR is shorter than their replicas.
        A single node describes itself as a cluster of one (``clustered`` False)."""
        return self._metadata.describe()

    def close(self) -> None:
        self._channels.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def list_offsets(
    stub: logstore_pb2_grpc.LogStoreStub,
    queries: Mapping[TopicPartition, OffsetQuery],
    *,
    server: str,
    timeout: float,
    isolation_level: int = 0,
) -> dict[TopicPartition, int]:
    """One ``ListOffsets`` call; raises the first partition's error, typed."""
    if not queries:
        return {}
    request = records_pb2.ListOffsetsRequest(isolation_level=isolation_level)  # type: ignore[arg-type]
    for tp, query in queries.items():
        spec, timestamp_ms = offset_spec(query)
        request.partitions.add(
            topic=tp.topic, partition=tp.partition, spec=spec, timestamp_ms=timestamp_ms  # type: ignore[arg-type]
        )
    with translate_errors(server):
        response = stub.ListOffsets(request, timeout=timeout)
    offsets: dict[TopicPartition, int] = {}
    for listed in response.offsets:
        if listed.HasField("error"):
            raise error_from_detail(listed.error)
        offsets[TopicPartition(listed.topic, listed.partition)] = listed.offset
    return offsets


def list_offsets_routed(
    metadata: Metadata,
    queries: Mapping[TopicPartition, OffsetQuery],
    *,
    timeout: float,
    isolation_level: int = 0,
) -> dict[TopicPartition, int]:
    """``list_offsets`` sent to each partition's leader (one call per leader broker; one call
    to the current address on a single node). A partition without a leader right now raises
    the retriable ``NotLeaderError``."""
    if not metadata.routes_by_leader():
        current = metadata.address()
        return list_offsets(metadata.channels.stub(current), queries, server=current,
                            timeout=timeout, isolation_level=isolation_level)
    view = metadata.view_for({tp.topic for tp in queries})
    groups = view.group_by_leader(queries.items(), lambda item: item[0], metadata.address())
    offsets: dict[TopicPartition, int] = {}
    for address, items in groups.items():
        if address is None:
            metadata.invalidate()
            raise NotLeaderError(*items[0][0])
        try:
            offsets.update(list_offsets(metadata.channels.stub(address), dict(items),
                                        server=address, timeout=timeout,
                                        isolation_level=isolation_level))
        except LogstoreError as exc:
            metadata.observe(exc, address)
            raise
    return offsets


def offset_spec(query: OffsetQuery) -> tuple[int, int]:
    """("earliest" | "latest" | ms | datetime) -> (OffsetSpec, timestamp_ms)."""
    if query == "earliest":
        return records_pb2.OFFSET_EARLIEST, 0
    if query == "latest":
        return records_pb2.OFFSET_LATEST, 0
    if isinstance(query, datetime.datetime):
        return records_pb2.OFFSET_TIMESTAMP, to_epoch_ms(query)
    if isinstance(query, int) and not isinstance(query, bool):
        return records_pb2.OFFSET_TIMESTAMP, query
    raise ValueError(f"an offset query is 'earliest', 'latest', ms or a datetime, not {query!r}")


def to_epoch_ms(moment: datetime.datetime) -> int:
    """A datetime as ms since the epoch; a naive one is local time."""
    return int(moment.timestamp() * 1000)


def _strings(mapping: Mapping[str, object]) -> dict[str, str]:
    return {str(key): _config_text(value) for key, value in mapping.items()}


def _config_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _committed(message: Any) -> CommittedOffset:
    if message.HasField("error") and message.error.reason:
        raise error_from_detail(message.error)
    return CommittedOffset(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        log_end_offset=message.log_end_offset,
        lag=message.lag,
        metadata=message.metadata,
        commit_timestamp_ms=message.commit_timestamp_ms,
    )


def _description(message: Any) -> TopicDescription:
    return TopicDescription(
        name=message.name,
        partition_count=message.partition_count,
        internal=message.internal,
        config=dict(message.config),
        partitions=[
            PartitionInfo(
                partition=p.partition,
                log_start_offset=p.log_start_offset,
                log_end_offset=p.log_end_offset,
                last_stable_offset=p.last_stable_offset,
                size_bytes=p.size_bytes,
                segments=p.segments,
            )
            for p in message.partitions
        ],
    )
