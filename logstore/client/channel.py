"""The client's edge with gRPC: one channel per broker address (``Channels``), and error
translation in one place.

Every gRPC failure becomes the typed error from ``logstore.errors``, raised ``from`` the original:

- a status carrying a ``google.rpc.ErrorInfo`` -> ``error_classes()[reason].from_wire(...)``;
- UNAVAILABLE or DEADLINE_EXCEEDED without one -> ``UnavailableError`` (the broker is down,
  restarting, or too slow), its message ending with what is likely wrong when the transport's
  words tell (plaintext against a TLS broker, a certificate that does not verify: see
  ``connect_hints``);
- anything else -> a plain ``LogstoreError`` whose reason is the gRPC code's name.

Per-partition errors inside a response (an ``ErrorDetail``) go through ``error_from_detail``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import grpc
import grpc.experimental
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from logstore.api.v1 import logstore_pb2_grpc
from logstore.client.config import (
    MAX_MESSAGE_BYTES,
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    Credentials,
    backoff_seconds,
)
from logstore.client.connect_hints import connection_hint, remember
from logstore.errors import (
    InvalidConfigError,
    LogstoreError,
    NotAuthorizedError,
    UnavailableError,
    error_classes,
)

#: Large messages both ways; keepalive so a dead broker is noticed on an idle stream.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # megabyte messages: big HTTP/2 frames and socket reads (measured ~20% more bandwidth)
    ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
    ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
    ("grpc.experimental.tcp_min_read_chunk_size", 256 << 10),
    ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
]

#: Worth retrying: the broker is down, restarting, slow, or cancelled the call as it stopped.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)

P = ParamSpec("P")
R = TypeVar("R")


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ()) + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method: Any, timeout: Any, metadata: Any, credentials: Any,
                 wait_for_ready: Any, compression: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


#: A consumer's channels: a server stream (``Subscribe``) is read by the thread that iterates it,
#: polling the call's own completion queue, instead of the channel's spin thread reading it and
#: waking that thread: one thread hop less for every pushed message. Such a call has no blocking
#: ``result()``; every unary-stream call on these channels is only iterated.
READER_POLLS_STREAMS: tuple[str, int] = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)


def open_channel(server: str, credentials: Credentials | None = None,
                 options: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
    """A channel to ``server``: TLS when ``credentials`` name a CA or a client certificate, and
    a bearer token on every call when they carry one. A PEM file that cannot be read raises
    ``InvalidConfigError`` naming the file and the option (``key``: tls_ca, tls_cert, tls_key).
    ``options`` are added to ``CHANNEL_OPTIONS`` (e.g. ``READER_POLLS_STREAMS``)."""
    credentials = credentials or Credentials()
    remember(server, credentials)
    channel_options = CHANNEL_OPTIONS + list(options)
    if credentials.tls:
        channel = grpc.secure_channel(
            server,
            grpc.ssl_channel_credentials(
                _read_pem(credentials.tls_ca, "tls_ca", f"--tls-ca / ${TLS_CA_ENV}"),
                _read_pem(credentials.tls_key, "tls_key", f"--tls-key / ${TLS_KEY_ENV}"),
                _read_pem(credentials.tls_cert, "tls_cert", f"--tls-cert / ${TLS_CERT_ENV}"),
            ),
            options=channel_options,
        )
    else:
        channel = grpc.insecure_channel(server, options=channel_options)
    if credentials.token:
        channel = grpc.intercept_channel(channel, _BearerToken(credentials.token))
    return channel


def _read_pem(path: str | None, key: str, options: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise InvalidConfigError(
            f"cannot read the {key} file {path!r} ({key}=, {options}): {exc.strerror}",
            key=key, value=path,
        ) from None


def open_stub(channel: grpc.Channel) -> logstore_pb2_grpc.LogStoreStub:
    return logstore_pb2_grpc.LogStoreStub(channel)


def make_error(reason: str, message: str, metadata: Mapping[str, str]) -> LogstoreError:
    """The typed error for a wire ``reason``; an unknown reason keeps its name on a base error."""
    cls = error_classes().get(reason)
    if cls is None:
        error = LogstoreError.from_wire(message, dict(metadata))
        error.reason = reason  # type: ignore[misc]
        return error
    return cls.from_wire(message, dict(metadata))


def error_from_detail(detail: Any) -> LogstoreError:
    """A per-partition ``ErrorDetail`` (reason, message, metadata) as a typed error."""
    return make_error(detail.reason or "INTERNAL", detail.message, detail.metadata)


def error_from_rpc(exc: grpc.RpcError, server: str | None = None) -> LogstoreError:
    """A failed call as a typed error (see the module docstring)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    info = _error_info(exc)
    if info is not None:
        return make_error(info.reason, details or info.reason, info.metadata)
    if code in _TRANSIENT:
        where = f" at {server}" if server else ""
        said = details or code.name
        hint = connection_hint(said, server)
        message = f"{hint} [gRPC: {said}]" if hint else said
        return UnavailableError(f"cannot reach the broker{where}: {message}", code=code.name)
    error = LogstoreError(f"{code.name}: {details}" if details else code.name)
    error.reason = code.name  # type: ignore[misc]
    return error


#: Reasons worth retrying after a backoff. The cluster ones also mean the client's metadata is
#: stale: it asks again where the partition's leader or the coordinator is (see ``metadata``).
TRANSIENT_REASONS = frozenset((
    "UNAVAILABLE", "SHUTTING_DOWN",
    "NOT_LEADER", "NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", "METADATA_UNAVAILABLE",
    "ETCD_UNAVAILABLE", "CONCURRENT_TRANSACTIONS",
))


def is_transient(error: LogstoreError) -> bool:
    """Worth retrying after a backoff: the broker is unreachable or shutting down, or (in a
    cluster) no longer leads the partition or coordinates the group."""
    return error.reason in TRANSIENT_REASONS


@contextmanager
def translate_errors(server: str | None = None) -> Iterator[None]:
    """Re-raise ``grpc.RpcError`` inside the block as the typed ``LogstoreError``."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, server) from exc


@contextmanager
def refused_as(operation: str, topic: str) -> Iterator[None]:
    """Re-raise a refused ``describe`` of ``topic`` (the metadata call a producer or consumer
    makes first) as the right the caller is about to use: the broker grants describe with read
    and write, so a principal refused it lacks that right too, and that is what it should be
    told it needs."""
    try:
        yield
    except NotAuthorizedError as exc:
        if exc.fields.get("operation") != "describe":
            raise
        principal = str(exc.fields.get("principal", "?"))
        raise NotAuthorizedError(principal, operation, "topic", topic,
                                 allowed_by=[operation, "admin"]) from exc


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """``translate_errors`` as a decorator for client methods (uses ``self.server``)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as exc:
            server = getattr(args[0], "server", None) if args else None
            raise error_from_rpc(exc, server) from exc

    return wrapper


def _error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def call_with_retries(
    call: Callable[[], R],
    *,
    server: str,
    retries: int,
    retry_backoff_ms: float,
    retry_backoff_max_ms: float,
    sleep: Callable[[float], object] | None = None,
) -> R:
    """``call()`` with errors translated, re-tried after a backoff while the broker is
    unreachable (for idempotent calls: metadata, offsets, fetches)."""
    attempt = 0
    while True:
        try:
            with translate_errors(server):
                return call()
        except LogstoreError as exc:
            attempt += 1
            if not is_transient(exc) or attempt > retries:
                raise
            (sleep or time.sleep)(backoff_seconds(attempt, retry_backoff_ms, retry_backoff_max_ms))


# -- one channel per broker ----------------------------------------------------------------------


class Channels:
    """The channels of one client object: one per broker address, opened on first use with the
    client's credentials, closed together. Thread-safe (``_lock`` guards the maps)."""

    def __init__(self, credentials: Credentials | None = None,
                 options: tuple[tuple[str, Any], ...] = ()) -> None:
        """``options``: extra channel options for every channel (see ``open_channel``)."""
        self._credentials = credentials
        self._options = options
        if credentials is not None:  # an unreadable PEM file is refused now, not at first use
            for path, key, option in ((credentials.tls_ca, "tls_ca", TLS_CA_ENV),
                                      (credentials.tls_key, "tls_key", TLS_KEY_ENV),
                                      (credentials.tls_cert, "tls_cert", TLS_CERT_ENV)):
                _read_pem(path, key, f"--{key.replace('_', '-')} / ${option}")
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, logstore_pb2_grpc.LogStoreStub] = {}

    @property
    def credentials(self) -> Credentials | None:
        """The client's credentials (None: plaintext, no token), for connections of its own."""
        return self._credentials

    def channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            with self._lock:
                channel = self._channels.get(address)
                if channel is None:
                    channel = self._channels[address] = open_channel(
                        address, self._credentials, self._options
                    )
        return channel

    def stub(self, address: str) -> logstore_pb2_grpc.LogStoreStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = open_stub(self.channel(address))
        return stub

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()
