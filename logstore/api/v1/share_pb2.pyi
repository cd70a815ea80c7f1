from logstore.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AcknowledgeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACKNOWLEDGE_KIND_UNSPECIFIED: _ClassVar[AcknowledgeKind]
    ACKNOWLEDGE_ACCEPT: _ClassVar[AcknowledgeKind]
    ACKNOWLEDGE_RELEASE: _ClassVar[AcknowledgeKind]
    ACKNOWLEDGE_REJECT: _ClassVar[AcknowledgeKind]
    ACKNOWLEDGE_RENEW: _ClassVar[AcknowledgeKind]

class ShareResetSpec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARE_RESET_UNSPECIFIED: _ClassVar[ShareResetSpec]
    SHARE_RESET_EARLIEST: _ClassVar[ShareResetSpec]
    SHARE_RESET_LATEST: _ClassVar[ShareResetSpec]
    SHARE_RESET_OFFSET: _ClassVar[ShareResetSpec]
ACKNOWLEDGE_KIND_UNSPECIFIED: AcknowledgeKind
ACKNOWLEDGE_ACCEPT: AcknowledgeKind
ACKNOWLEDGE_RELEASE: AcknowledgeKind
ACKNOWLEDGE_REJECT: AcknowledgeKind
ACKNOWLEDGE_RENEW: AcknowledgeKind
SHARE_RESET_UNSPECIFIED: ShareResetSpec
SHARE_RESET_EARLIEST: ShareResetSpec
SHARE_RESET_LATEST: ShareResetSpec
SHARE_RESET_OFFSET: ShareResetSpec

class ShareAcknowledgement(_message.Message):
    __slots__ = ("topic", "partition", "first_offset", "last_offset", "kind", "delay_ms", "error")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    kind: AcknowledgeKind
    delay_ms: int
    error: str
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ..., kind: _Optional[_Union[AcknowledgeKind, str]] = ..., delay_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ShareAcknowledgementResult(_message.Message):
    __slots__ = ("topic", "partition", "first_offset", "last_offset", "error")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    error: _common_pb2.ErrorDetail
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class ShareFetchRequest(_message.Message):
    __slots__ = ("group_id", "member_id", "topics", "max_records", "max_bytes", "max_wait_ms", "lock_ms", "acknowledgements", "correlation_id")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    LOCK_MS_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    member_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    max_records: int
    max_bytes: int
    max_wait_ms: int
    lock_ms: int
    acknowledgements: _containers.RepeatedCompositeFieldContainer[ShareAcknowledgement]
    correlation_id: int
    def __init__(self, group_id: _Optional[str] = ..., member_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., max_records: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., lock_ms: _Optional[int] = ..., acknowledgements: _Optional[_Iterable[_Union[ShareAcknowledgement, _Mapping]]] = ..., correlation_id: _Optional[int] = ...) -> None: ...

class AcquiredRecords(_message.Message):
    __slots__ = ("topic", "partition", "records", "first_offsets", "last_offsets", "delivery_counts")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    records: bytes
    first_offsets: _containers.RepeatedScalarFieldContainer[int]
    last_offsets: _containers.RepeatedScalarFieldContainer[int]
    delivery_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., records: _Optional[bytes] = ..., first_offsets: _Optional[_Iterable[int]] = ..., last_offsets: _Optional[_Iterable[int]] = ..., delivery_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class ShareFetchResponse(_message.Message):
    __slots__ = ("partitions", "refused", "correlation_id", "error")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[AcquiredRecords]
    refused: _containers.RepeatedCompositeFieldContainer[ShareAcknowledgementResult]
    correlation_id: int
    error: _common_pb2.ErrorDetail
    def __init__(self, partitions: _Optional[_Iterable[_Union[AcquiredRecords, _Mapping]]] = ..., refused: _Optional[_Iterable[_Union[ShareAcknowledgementResult, _Mapping]]] = ..., correlation_id: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class ShareAcknowledgeRequest(_message.Message):
    __slots__ = ("group_id", "member_id", "acknowledgements", "lock_ms", "leave")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    LOCK_MS_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    member_id: str
    acknowledgements: _containers.RepeatedCompositeFieldContainer[ShareAcknowledgement]
    lock_ms: int
    leave: bool
    def __init__(self, group_id: _Optional[str] = ..., member_id: _Optional[str] = ..., acknowledgements: _Optional[_Iterable[_Union[ShareAcknowledgement, _Mapping]]] = ..., lock_ms: _Optional[int] = ..., leave: _Optional[bool] = ...) -> None: ...

class ShareAcknowledgeResponse(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: _containers.RepeatedCompositeFieldContainer[ShareAcknowledgementResult]
    def __init__(self, refused: _Optional[_Iterable[_Union[ShareAcknowledgementResult, _Mapping]]] = ...) -> None: ...

class ListShareGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShareGroupSummary(_message.Message):
    __slots__ = ("group_id", "members", "acquired")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    members: int
    acquired: int
    def __init__(self, group_id: _Optional[str] = ..., members: _Optional[int] = ..., acquired: _Optional[int] = ...) -> None: ...

class ListShareGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[ShareGroupSummary]
    def __init__(self, groups: _Optional[_Iterable[_Union[ShareGroupSummary, _Mapping]]] = ...) -> None: ...

class DescribeShareGroupRequest(_message.Message):
    __slots__ = ("group_id",)
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    def __init__(self, group_id: _Optional[str] = ...) -> None: ...

class ShareMember(_message.Message):
    __slots__ = ("member_id", "last_seen_ms", "acquired")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    last_seen_ms: int
    acquired: int
    def __init__(self, member_id: _Optional[str] = ..., last_seen_ms: _Optional[int] = ..., acquired: _Optional[int] = ...) -> None: ...

class SharePartitionState(_message.Message):
    __slots__ = ("topic", "partition", "start_offset", "end_offset", "log_end_offset", "available", "acquired", "acknowledged", "archived", "delayed", "oldest_unacknowledged_age_ms", "redeliveries", "dead_lettered", "lock_expiries")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_UNACKNOWLEDGED_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    REDELIVERIES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    LOCK_EXPIRIES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    log_end_offset: int
    available: int
    acquired: int
    acknowledged: int
    archived: int
    delayed: int
    oldest_unacknowledged_age_ms: int
    redeliveries: int
    dead_lettered: int
    lock_expiries: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., log_end_offset: _Optional[int] = ..., available: _Optional[int] = ..., acquired: _Optional[int] = ..., acknowledged: _Optional[int] = ..., archived: _Optional[int] = ..., delayed: _Optional[int] = ..., oldest_unacknowledged_age_ms: _Optional[int] = ..., redeliveries: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., lock_expiries: _Optional[int] = ...) -> None: ...

class ShareGroupDescription(_message.Message):
    __slots__ = ("group_id", "config", "members", "partitions")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    config: _containers.ScalarMap[str, str]
    members: _containers.RepeatedCompositeFieldContainer[ShareMember]
    partitions: _containers.RepeatedCompositeFieldContainer[SharePartitionState]
    def __init__(self, group_id: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., members: _Optional[_Iterable[_Union[ShareMember, _Mapping]]] = ..., partitions: _Optional[_Iterable[_Union[SharePartitionState, _Mapping]]] = ...) -> None: ...

class AlterShareGroupConfigRequest(_message.Message):
    __slots__ = ("group_id", "set", "reset")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    set: _containers.ScalarMap[str, str]
    reset: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group_id: _Optional[str] = ..., set: _Optional[_Mapping[str, str]] = ..., reset: _Optional[_Iterable[str]] = ...) -> None: ...

class ResetShareGroupRequest(_message.Message):
    __slots__ = ("group_id", "topic", "partitions", "spec", "offset")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    topic: str
    partitions: _containers.RepeatedScalarFieldContainer[int]
    spec: ShareResetSpec
    offset: int
    def __init__(self, group_id: _Optional[str] = ..., topic: _Optional[str] = ..., partitions: _Optional[_Iterable[int]] = ..., spec: _Optional[_Union[ShareResetSpec, str]] = ..., offset: _Optional[int] = ...) -> None: ...

class ResetShareGroupResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[SharePartitionState]
    def __init__(self, partitions: _Optional[_Iterable[_Union[SharePartitionState, _Mapping]]] = ...) -> None: ...
