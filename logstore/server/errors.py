"""The one table that maps logstore's typed errors to gRPC status codes.

Every error leaves the server as a gRPC status whose details hold a ``google.rpc.ErrorInfo`` with
``domain = "logstore.dev"``, the error's stable ``reason`` and its fields as ``metadata`` (e.g.
``log_start_offset`` and ``log_end_offset`` for OFFSET_OUT_OF_RANGE). Per-partition errors inside a
response use the same code, reason and metadata in an ``ErrorDetail`` message. Anything not in the
table is an INTERNAL "unknown server error", logged with its traceback.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from logstore import errors
from logstore.api.v1 import common_pb2

log = logging.getLogger(__name__)

DOMAIN = "logstore.dev"

#: Most specific first; a subclass not listed falls back to its nearest listed base class.
STATUS_BY_ERROR: dict[type[errors.LogstoreError], grpc.StatusCode] = {
    errors.UnknownTopicError: grpc.StatusCode.NOT_FOUND,
    errors.UnknownPartitionError: grpc.StatusCode.NOT_FOUND,
    errors.TopicExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.OffsetOutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    errors.CorruptBatchError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RecordTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.BatchTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidNameError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DiskFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.StorageError: grpc.StatusCode.INTERNAL,
    errors.LogClosedError: grpc.StatusCode.UNAVAILABLE,
    errors.ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.UnknownGroupError: grpc.StatusCode.NOT_FOUND,
    errors.UnknownMemberError: grpc.StatusCode.NOT_FOUND,
    errors.FencedMemberEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PartitionNotAssignedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.GroupNotEmptyError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ProducerFencedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutOfOrderSequenceError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidTransactionStateError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TransactionAbortedError: grpc.StatusCode.ABORTED,
    errors.UnknownTransactionalIdError: grpc.StatusCode.NOT_FOUND,
    errors.UnstableOffsetCommitError: grpc.StatusCode.UNAVAILABLE,
    errors.ConcurrentTransactionsError: grpc.StatusCode.UNAVAILABLE,
    errors.RecordNotAcquiredError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotAuthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.NotAuthorizedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotLeaderError: grpc.StatusCode.UNAVAILABLE,
    errors.NotEnoughReplicasError: grpc.StatusCode.UNAVAILABLE,
    errors.FencedLeaderEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotCoordinatorError: grpc.StatusCode.UNAVAILABLE,
    errors.CoordinatorNotAvailableError: grpc.StatusCode.UNAVAILABLE,
    errors.MetadataUnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: BaseException) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_BY_ERROR.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def as_logstore_error(error: BaseException) -> errors.LogstoreError:
    if isinstance(error, errors.LogstoreError) and status_code(error) is not grpc.StatusCode.INTERNAL:
        return error
    if isinstance(error, errors.LogstoreError):
        log.error("internal error: %s", error, exc_info=error)
        return error
    log.error("unknown server error: %r", error, exc_info=error)
    return errors.LogstoreError("unknown server error")


def to_status(error: BaseException) -> grpc.Status:
    """A rich gRPC status (code, message, ErrorInfo) for ``error``."""
    typed = as_logstore_error(error)
    code = status_code(typed)
    info = error_details_pb2.ErrorInfo(reason=typed.reason, domain=DOMAIN, metadata=typed.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=typed.message, details=[detail])
    )


def error_detail(error: BaseException) -> common_pb2.ErrorDetail:
    """The per-partition form of the same mapping."""
    typed = as_logstore_error(error)
    return common_pb2.ErrorDetail(
        code=status_code(typed).value[0],
        reason=typed.reason,
        message=typed.message,
        metadata=typed.metadata,
    )
