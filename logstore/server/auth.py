"""Authentication (bearer tokens, mutual TLS) and authorization (per-principal ACLs).

Tokens travel in gRPC metadata as ``authorization: Bearer <token>``. The server keeps only the
SHA-256 of each secret, in a TOML file::

    [principals.billing]
    token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

    [[acl]]
    principal = "billing"         # or "*" for every authenticated principal
    resource = "topic"            # topic | group | cluster
    name = "invoices"             # exact, or a prefix ending in "*", or "*"
    operations = ["read", "write"]  # describe | read | write | admin | replica (brokers: cluster "*")

Rights imply others as in Kafka: ``admin`` implies every right, and ``read`` or ``write`` implies
``describe`` (DescribeTopic and listings need only ``describe``, so a producer that may write a
topic may also learn its partition count).

``logstore token hash`` prints the SHA-256 of a token read from stdin. With mutual TLS a client
certificate's common name is the principal when no token is sent.

An interceptor authenticates every call except the health service (UNAUTHENTICATED when
credentials are missing or wrong); handlers ask ``authorize(resource, name, operation)`` before
acting (PERMISSION_DENIED otherwise). Both are logged. Without a security file, everyone is the
anonymous principal with every right — the default listener stays on loopback for that reason.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from logstore.errors import InvalidConfigError, NotAuthenticatedError, NotAuthorizedError

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
RESOURCES = ("topic", "group", "cluster")
OPERATIONS = ("describe", "read", "write", "admin", "replica")
#: operation -> the rights that allow it (besides itself).
IMPLIED_BY: dict[str, frozenset[str]] = {
    "describe": frozenset({"read", "write", "admin"}),
    "read": frozenset({"admin"}),
    "write": frozenset({"admin"}),
    "replica": frozenset({"admin"}),
    "admin": frozenset(),
}
UNAUTHENTICATED_METHODS = ("/grpc.health.v1.Health/",)

principal_var: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default=ANONYMOUS)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AclRule:
    principal: str
    resource: str
    name: str
    operations: frozenset[str]

    def matches(self, principal: str, resource: str, name: str, operation: str) -> bool:
        if self.principal not in ("*", principal) or self.resource != resource:
            return False
        if operation not in self.operations and not self.operations & IMPLIED_BY[operation]:
            return False
        if self.name == "*" or self.name == name:
            return True
        return self.name.endswith("*") and name.startswith(self.name[:-1])


@dataclass(frozen=True)
class SecurityConfig:
    enabled: bool = False
    token_hashes: dict[str, str] = field(default_factory=dict)  # sha256 hex -> principal
    acl: tuple[AclRule, ...] = ()

    @classmethod
    def load(cls, path: str | Path | None) -> SecurityConfig:
        if path is None:
            return cls()
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            raise InvalidConfigError(f"security file {path}: {exc.strerror}", key="security_file") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"security file {path}: {exc}", key="security_file") from None
        hashes: dict[str, str] = {}
        for principal, entry in document.get("principals", {}).items():
            digest = str(entry.get("token_sha256", "")).lower()
            if len(digest) != 64:
                raise InvalidConfigError(
                    f"principal {principal!r}: token_sha256 must be 64 hex digits", key="token_sha256"
                )
            hashes[digest] = principal
        rules = []
        for entry in document.get("acl", []):
            resource = entry.get("resource")
            operations = frozenset(entry.get("operations", []))
            if resource not in RESOURCES or not operations <= set(OPERATIONS):
                raise InvalidConfigError(f"bad acl entry {entry!r}", key="acl")
            rules.append(AclRule(str(entry.get("principal", "")), resource, str(entry.get("name", "")), operations))
        return cls(True, hashes, tuple(rules))

    def authenticate(self, token: str | None, certificate_name: str | None) -> str:
        if not self.enabled:
            return ANONYMOUS
        if token:
            digest = hash_token(token)
            for known, principal in self.token_hashes.items():
                if hmac.compare_digest(known, digest):
                    return principal
            raise NotAuthenticatedError("the bearer token is not known")
        if certificate_name:
            return certificate_name
        raise NotAuthenticatedError("this broker needs credentials: send 'authorization: Bearer <token>'")

    def allowed(self, principal: str, resource: str, name: str, operation: str) -> bool:
        if not self.enabled:
            return True
        return any(rule.matches(principal, resource, name, operation) for rule in self.acl)


def allowing(operation: str) -> list[str]:
    """The rights any of which allows ``operation``, itself first: describe -> describe, read,
    write, admin."""
    return [operation, *(right for right in OPERATIONS if right in IMPLIED_BY[operation])]


class Authorizer:
    def __init__(self, config: SecurityConfig) -> None:
        self.config = config

    def check(self, resource: str, name: str, operation: str) -> None:
        principal = principal_var.get()
        if not self.config.allowed(principal, resource, name, operation):
            log.warning("denied: %s may not %s %s %s", principal, operation, resource, name)
            raise NotAuthorizedError(principal, operation, resource, name,
                                     allowed_by=allowing(operation))

    def can(self, resource: str, name: str, operation: str) -> bool:
        return self.config.allowed(principal_var.get(), resource, name, operation)


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            if text.lower().startswith("bearer "):
                return text[7:].strip()
            return None
    return None


def _certificate_name(context: grpc.aio.ServicerContext) -> str | None:
    try:
        auth = context.auth_context()
    except Exception:  # not TLS
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates each call and puts the principal in ``principal_var`` for the handler."""

    def __init__(self, config: SecurityConfig, on_failure: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_failure = on_failure

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if not self.config.enabled or handler is None:
            return handler
        if handler_call_details.method.startswith(UNAUTHENTICATED_METHODS):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        return _wrap(handler, self.config, token, handler_call_details.method, self.on_failure)


def _wrap(
    handler: grpc.RpcMethodHandler, config: SecurityConfig, token: str | None, method: str,
    on_failure: Callable[[str], None] | None,
) -> grpc.RpcMethodHandler:
    async def login(context: grpc.aio.ServicerContext) -> bool:
        try:
            principal_var.set(config.authenticate(token, _certificate_name(context)))
            return True
        except NotAuthenticatedError as exc:
            log.warning("unauthenticated call to %s from %s: %s", method, context.peer(), exc.message)
            if on_failure is not None:
                on_failure(exc.reason)
            from logstore.server.errors import to_status

            await context.abort_with_status(to_status(exc))
            return False

    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await login(context)
            return await inner_uu(request, context)

        return handler._replace(unary_unary=unary_unary)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await login(context)
            async for item in inner_us(request, context):
                yield item

        return handler._replace(unary_stream=unary_stream)
    if handler.stream_stream:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await login(context)
            async for item in inner_ss(requests, context):
                yield item

        return handler._replace(stream_stream=stream_stream)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await login(context)
            return await inner_su(requests, context)

        return handler._replace(stream_unary=stream_unary)
    return handler
