"""The errors of the etcd client, each carrying the fields a caller acts on.

They are ``LogstoreError`` subclasses with a stable ``reason``, so the server edge maps them in its
one table (``logstore.server.errors``): ``EtcdUnavailableError`` is an ``UnavailableError``, so it
leaves as gRPC UNAVAILABLE with reason ETCD_UNAVAILABLE; the others need rows there when a
server path can raise them. ``translate`` turns a gRPC error from etcd into one of them, once, at
the client's boundary.
"""

from __future__ import annotations

import grpc

from logstore.errors import LogstoreError, UnavailableError

#: gRPC codes after which the client tries the next endpoint: the member is down, cut off, has no
#: raft leader ("etcdserver: no leader"), or did not answer in time.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class EtcdError(LogstoreError):
    """etcd refused or failed a request. ``code`` is the gRPC status name, ``endpoint`` who said it."""

    reason = "ETCD_ERROR"

    def __init__(
        self, message: str, *, code: str | None = None, endpoint: str | None = None, **fields: object
    ) -> None:
        super().__init__(message, code=code, endpoint=endpoint, **fields)
        self.code = code
        self.endpoint = endpoint


class EtcdUnavailableError(EtcdError, UnavailableError):
    """No endpoint answered within the call's timeout (all down, or etcd has lost its quorum).

    An ``UnavailableError`` too, so the server's table already maps it to gRPC UNAVAILABLE.
    ``endpoints`` is every endpoint tried; the message ends with the last error of each. A write
    that ended with this error may still have been applied: make writes idempotent (guarded
    transactions) and retry them.
    """

    reason = "ETCD_UNAVAILABLE"

    def __init__(self, message: str, *, endpoints: str) -> None:
        super().__init__(message, code="UNAVAILABLE", endpoints=endpoints)
        self.endpoints = endpoints


class EtcdCompactedError(EtcdError):
    """A watch asked for revisions etcd has compacted away; re-read the keys, then watch again
    from the revision that read returned + 1."""

    reason = "ETCD_COMPACTED"

    def __init__(self, message: str, *, compact_revision: int, start_revision: int) -> None:
        super().__init__(message, compact_revision=compact_revision, start_revision=start_revision)
        self.compact_revision = compact_revision
        self.start_revision = start_revision


class EtcdLeaseNotFoundError(EtcdError):
    """The lease does not exist (it expired, was revoked, or never existed)."""

    reason = "ETCD_LEASE_NOT_FOUND"

    def __init__(self, message: str, *, lease_id: int, endpoint: str | None = None) -> None:
        super().__init__(message, code="NOT_FOUND", endpoint=endpoint, lease_id=lease_id)
        self.lease_id = lease_id


def translate(error: grpc.aio.AioRpcError, endpoint: str) -> EtcdError:
    """The client's error for a non-retryable gRPC error from ``endpoint``."""
    code = error.code()
    details = error.details() or ""
    return EtcdError(f"etcd at {endpoint}: {code.name}: {details}", code=code.name, endpoint=endpoint)


def describe(error: grpc.aio.AioRpcError, endpoint: str) -> str:
    """One line for the failure list of an ``EtcdUnavailableError``."""
    return f"{endpoint}: {error.code().name} {error.details() or ''}".rstrip()
