"""Every error logstore raises, in one short module.

Errors carry the fields a caller needs to act on them, and a stable machine-readable ``reason``
(UPPER_SNAKE_CASE) that the server maps, in one table (``logstore.server.errors``), to a gRPC status
code plus a ``google.rpc.ErrorInfo``. The domain layers (records, storage, broker) raise these and
never know about gRPC.
"""

from __future__ import annotations


class LogstoreError(Exception):
    """Base class. ``reason`` is stable and machine-readable; ``metadata`` are its string fields."""

    reason = "INTERNAL"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    @property
    def metadata(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.fields.items() if value is not None}

    @classmethod
    def from_wire(cls, message: str, metadata: dict[str, str]) -> LogstoreError:
        """Rebuild an error received from a server: fields from metadata, ints where they look it."""
        error = cls.__new__(cls)
        fields: dict[str, object] = {}
        for key, value in metadata.items():
            try:
                fields[key] = int(value)
            except ValueError:
                fields[key] = value
        Exception.__init__(error, message)
        error.message = message
        error.fields = fields
        for name, field in fields.items():
            if name not in ("message", "fields", "reason", "metadata"):
                setattr(error, name, field)
        return error


# -- records -----------------------------------------------------------------------------------


class CorruptBatchError(LogstoreError):
    """A record batch whose length, crc, magic, attributes or record count do not add up."""

    reason = "CORRUPT_BATCH"

    def __init__(self, message: str, *, position: int | None = None, **fields: object) -> None:
        super().__init__(message, position=position, **fields)
        self.position = position


class BatchTooLargeError(LogstoreError):
    reason = "BATCH_TOO_LARGE"

    def __init__(self, message: str, *, size: int, limit: int, **fields: object) -> None:
        super().__init__(message, size=size, limit=limit, **fields)
        self.size = size
        self.limit = limit


class RecordTooLargeError(BatchTooLargeError):
    reason = "RECORD_TOO_LARGE"


# -- storage -----------------------------------------------------------------------------------


class InvalidNameError(LogstoreError):
    reason = "INVALID_NAME"

    def __init__(self, message: str, *, name: str, kind: str = "topic") -> None:
        super().__init__(message, name=name, kind=kind)
        self.name = name
        self.kind = kind


class InvalidConfigError(LogstoreError):
    reason = "INVALID_CONFIG"

    def __init__(self, message: str, *, key: str, value: object = None) -> None:
        super().__init__(message, key=key, value=value)
        self.key = key
        self.value = value


class UnknownTopicError(LogstoreError):
    reason = "UNKNOWN_TOPIC"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist", topic=topic)
        self.topic = topic


class UnknownPartitionError(LogstoreError):
    reason = "UNKNOWN_PARTITION"

    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        super().__init__(
            f"topic {topic!r} has no partition {partition} (it has {partitions})",
            topic=topic,
            partition=partition,
            partitions=partitions,
        )
        self.topic = topic
        self.partition = partition
        self.partitions = partitions


class TopicExistsError(LogstoreError):
    reason = "TOPIC_EXISTS"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} already exists", topic=topic)
        self.topic = topic


class OffsetOutOfRangeError(LogstoreError):
    """A read below log start or past log end."""

    reason = "OFFSET_OUT_OF_RANGE"

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        log_start_offset: int,
        log_end_offset: int,
    ) -> None:
        super().__init__(
            f"offset {offset} of {topic}/{partition} is out of range "
            f"[{log_start_offset}, {log_end_offset}]",
            topic=topic,
            partition=partition,
            offset=offset,
            log_start_offset=log_start_offset,
            log_end_offset=log_end_offset,
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class StorageError(LogstoreError):
    """A write or fsync failed (disk full, permission denied, I/O error). Nothing was appended."""

    reason = "STORAGE_ERROR"

    def __init__(self, message: str, *, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message, errno=errno, path=path)
        self.errno = errno
        self.path = path


class DiskFullError(StorageError):
    reason = "DISK_FULL"


class LogClosedError(LogstoreError):
    reason = "LOG_CLOSED"


class LimitExceededError(LogstoreError):
    """A configured limit (topics, partitions, request bytes, subscriptions, ...) was hit."""

    reason = "LIMIT_EXCEEDED"

    def __init__(self, message: str, *, limit_name: str, limit: int, **fields: object) -> None:
        super().__init__(message, limit_name=limit_name, limit=limit, **fields)
        self.limit_name = limit_name
        self.limit = limit


class InvalidRequestError(LogstoreError):
    """A request field is missing, negative, or otherwise not what the API allows."""

    reason = "INVALID_REQUEST"

    def __init__(self, message: str, *, field: str | None = None, **fields: object) -> None:
        super().__init__(message, field=field, **fields)
        self.field = field


class ShuttingDownError(LogstoreError):
    reason = "SHUTTING_DOWN"

    def __init__(self, message: str = "the broker is shutting down") -> None:
        super().__init__(message)


class UnavailableError(LogstoreError):
    """The client could not reach the broker (connection refused, timed out, shutting down)."""

    reason = "UNAVAILABLE"


class RequestTimeoutError(LogstoreError):
    reason = "TIMEOUT"


#: reason -> class, so a client can rebuild the typed error a server raised.
def error_classes() -> dict[str, type[LogstoreError]]:
    found: dict[str, type[LogstoreError]] = {}
    pending: list[type[LogstoreError]] = [LogstoreError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.reason, cls)
        pending.extend(cls.__subclasses__())
    return found


# -- groups ------------------------------------------------------------------------------------


class UnknownGroupError(LogstoreError):
    reason = "UNKNOWN_GROUP"

    def __init__(self, group_id: str) -> None:
        super().__init__(f"group {group_id!r} does not exist", group_id=group_id)
        self.group_id = group_id


class UnknownMemberError(LogstoreError):
    """The member id is not (or no longer) in the group: rejoin with member_epoch 0."""

    reason = "UNKNOWN_MEMBER"

    def __init__(self, group_id: str, member_id: str) -> None:
        super().__init__(
            f"member {member_id!r} is not in group {group_id!r}; rejoin the group",
            group_id=group_id,
            member_id=member_id,
        )
        self.group_id = group_id
        self.member_id = member_id


class FencedMemberEpochError(LogstoreError):
    """The member's epoch is stale: it was fenced (e.g. evicted and replaced); rejoin."""

    reason = "FENCED_MEMBER_EPOCH"

    def __init__(self, group_id: str, member_id: str, member_epoch: int, current_epoch: int) -> None:
        super().__init__(
            f"member {member_id!r} of group {group_id!r} sent epoch {member_epoch}, "
            f"current is {current_epoch}; rejoin the group",
            group_id=group_id,
            member_id=member_id,
            member_epoch=member_epoch,
            current_epoch=current_epoch,
        )
        self.group_id = group_id
        self.member_id = member_id
        self.member_epoch = member_epoch
        self.current_epoch = current_epoch


class PartitionNotAssignedError(LogstoreError):
    reason = "PARTITION_NOT_ASSIGNED"

    def __init__(self, group_id: str, member_id: str, topic: str, partition: int) -> None:
        super().__init__(
            f"{topic}/{partition} is not assigned to member {member_id!r} of group {group_id!r}",
            group_id=group_id,
            member_id=member_id,
            topic=topic,
            partition=partition,
        )
        self.group_id = group_id
        self.member_id = member_id
        self.topic = topic
        self.partition = partition


class GroupNotEmptyError(LogstoreError):
    reason = "GROUP_NOT_EMPTY"

    def __init__(self, group_id: str, members: int) -> None:
        super().__init__(
            f"group {group_id!r} has {members} active members; stop them first",
            group_id=group_id,
            members=members,
        )
        self.group_id = group_id
        self.members = members


# -- idempotent producers and transactions ------------------------------------------------------


class ProducerFencedError(LogstoreError):
    """A newer instance with the same producer id (or transactional id) has a higher epoch."""

    reason = "PRODUCER_FENCED"

    def __init__(self, producer_id: int, producer_epoch: int, current_epoch: int, **fields: object) -> None:
        super().__init__(
            f"producer {producer_id} epoch {producer_epoch} is fenced by epoch {current_epoch}",
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            current_epoch=current_epoch,
            **fields,
        )
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.current_epoch = current_epoch


class OutOfOrderSequenceError(LogstoreError):
    reason = "OUT_OF_ORDER_SEQUENCE"

    def __init__(self, producer_id: int, expected: int, received: int, **fields: object) -> None:
        super().__init__(
            f"producer {producer_id} sent sequence {received}, expected {expected}",
            producer_id=producer_id,
            expected=expected,
            received=received,
            **fields,
        )
        self.producer_id = producer_id
        self.expected = expected
        self.received = received


class InvalidTransactionStateError(LogstoreError):
    reason = "INVALID_TXN_STATE"


class TransactionAbortedError(LogstoreError):
    reason = "TRANSACTION_ABORTED"


class UnknownTransactionalIdError(LogstoreError):
    reason = "UNKNOWN_TRANSACTIONAL_ID"

    def __init__(self, transactional_id: str) -> None:
        super().__init__(
            f"transactional id {transactional_id!r} is unknown; call InitProducerId first",
            transactional_id=transactional_id,
        )
        self.transactional_id = transactional_id


class ConcurrentTransactionsError(LogstoreError):
    """The transactional id's previous transaction is still being completed (in a cluster: its
    markers are on their way to the partitions' leaders): retry shortly."""

    reason = "CONCURRENT_TRANSACTIONS"

    def __init__(self, transactional_id: str, state: str) -> None:
        super().__init__(
            f"transaction {transactional_id!r} is still completing ({state}); retry shortly",
            transactional_id=transactional_id, state=state,
        )
        self.transactional_id = transactional_id
        self.state = state


class UnstableOffsetCommitError(LogstoreError):
    """An offset commit of the group waits in an open transaction; retry shortly."""

    reason = "UNSTABLE_OFFSET_COMMIT"


# -- security ----------------------------------------------------------------------------------


class NotAuthenticatedError(LogstoreError):
    """No credentials, or credentials the broker does not know."""

    reason = "NOT_AUTHENTICATED"


class NotAuthorizedError(LogstoreError):
    """The principal's ACLs do not allow the operation."""

    reason = "NOT_AUTHORIZED"

    def __init__(
        self, principal: str, operation: str, resource: str, name: str,
        allowed_by: list[str] | None = None,
    ) -> None:
        # allowed_by: the rights any of which would allow it, named in the message
        rights = ""
        if allowed_by:
            listed = ", ".join(allowed_by[:-1]) + " or " if len(allowed_by) > 1 else ""
            rights = f" (that needs {listed}{allowed_by[-1]} on it)"
        super().__init__(
            f"principal {principal!r} may not {operation} {resource} {name!r}{rights}",
            principal=principal,
            operation=operation,
            resource=resource,
            name=name,
        )
        self.principal = principal
        self.operation = operation
        self.resource = resource
        self.name = name


# -- cluster -----------------------------------------------------------------------------------


class NotLeaderError(LogstoreError):
    """This broker does not lead the partition (it follows, or holds no copy): refresh metadata
    and send to ``leader_id`` (-1 when no leader is known right now)."""

    reason = "NOT_LEADER"

    def __init__(self, topic: str, partition: int, leader_id: int = -1, leader_epoch: int = -1) -> None:
        where = f"broker {leader_id} leads it" if leader_id >= 0 else "it has no leader right now"
        super().__init__(
            f"this broker is not the leader of {topic}/{partition}; {where}",
            topic=topic, partition=partition, leader_id=leader_id, leader_epoch=leader_epoch,
        )
        self.topic = topic
        self.partition = partition
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch


class NotEnoughReplicasError(LogstoreError):
    """acks=all needs ``min_insync_replicas`` replicas in sync; fewer are. Nothing was appended."""

    reason = "NOT_ENOUGH_REPLICAS"

    def __init__(self, topic: str, partition: int, isr: int, min_insync_replicas: int) -> None:
        super().__init__(
            f"{topic}/{partition} has {isr} in-sync replica(s), fewer than "
            f"min_insync_replicas={min_insync_replicas}; nothing was appended",
            topic=topic, partition=partition, isr=isr, min_insync_replicas=min_insync_replicas,
        )
        self.topic = topic
        self.partition = partition
        self.isr = isr
        self.min_insync_replicas = min_insync_replicas


class FencedLeaderEpochError(LogstoreError):
    """A replica request carried another leader epoch than the partition's current one."""

    reason = "FENCED_LEADER_EPOCH"

    def __init__(self, topic: str, partition: int, leader_epoch: int, current_epoch: int) -> None:
        super().__init__(
            f"{topic}/{partition}: leader epoch {leader_epoch} is not the current {current_epoch}",
            topic=topic, partition=partition, leader_epoch=leader_epoch, current_epoch=current_epoch,
        )
        self.topic = topic
        self.partition = partition
        self.leader_epoch = leader_epoch
        self.current_epoch = current_epoch


class NotCoordinatorError(LogstoreError):
    """Another broker coordinates this group or transactional id: ask FindCoordinator again."""

    reason = "NOT_COORDINATOR"

    def __init__(self, key: str, coordinator_id: int = -1) -> None:
        super().__init__(
            f"this broker is not the coordinator of {key!r}", key=key, coordinator_id=coordinator_id
        )
        self.key = key
        self.coordinator_id = coordinator_id


class CoordinatorNotAvailableError(LogstoreError):
    """No broker coordinates this group right now (in a cluster: its ``__consumer_offsets``
    partition has no leader, or the topic is still being created): retry after a backoff."""

    reason = "COORDINATOR_NOT_AVAILABLE"

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"no coordinator of {key!r} is available: {why}", key=key)
        self.key = key


class MetadataUnavailableError(LogstoreError):
    """The cluster's metadata store (etcd) cannot be reached or has no quorum: metadata changes
    (topic creation, leader elections) wait until it is back; current leaders keep serving."""

    reason = "METADATA_UNAVAILABLE"


# -- share groups ------------------------------------------------------------------------------


class RecordNotAcquiredError(LogstoreError):
    """An acknowledgement for records the member does not hold: its lock expired (the record
    is available again or another member has it), it was never delivered, or it is done."""

    reason = "RECORD_NOT_ACQUIRED"

    def __init__(self, message: str, *, group_id: str, topic: str, partition: int, offset: int,
                 state: str) -> None:
        super().__init__(message, group_id=group_id, topic=topic, partition=partition,
                         offset=offset, state=state)
        self.group_id = group_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.state = state
