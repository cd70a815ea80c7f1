"""The method table of the LogStore service, built from the proto's descriptors.

Like the generated ``add_LogStoreServicer_to_server``, except for the methods that carry record
bytes: their servicer methods take or return *serialized* messages so that batches are never
copied by protobuf (``wire.py``) —

- ``Produce`` and ``ProduceStream`` receive the raw request bytes (parsed into memoryviews);
  ``Produce`` is served as a client stream (of one request: the same bytes on the wire) so that
  its handler decides when the request is read (``max_queued_request_bytes``); ``ShareStream``
  receives raw bytes too (a streamed request is parsed by its handler);
- ``Fetch``, ``Subscribe`` and ``ReplicaFetch`` return the serialized response bytes.

Every other method uses the generated message classes as usual. A request that does not parse as
its message (protobuf's ``DecodeError``) is answered INVALID_ARGUMENT / INVALID_REQUEST through
the service's usual error path, not with gRPC's bare UNKNOWN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message, message_factory

from logstore.api.v1 import logstore_pb2
from logstore.errors import InvalidRequestError

SERVICE = logstore_pb2.DESCRIPTOR.services_by_name["LogStore"]
RAW_REQUESTS = {"Produce", "ProduceStream", "ShareStream"}
#: Unary in the proto, read by the handler as a stream of one request.
READ_BY_HANDLER = {"Produce"}
RAW_RESPONSES = {"Fetch", "Subscribe", "ReplicaFetch"}


def _identity(data: Any) -> Any:
    return data


@dataclass(frozen=True)
class Malformed:
    """What a request that does not parse deserializes to; the handler refuses it."""

    message: str


def _parser(request_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return request_class.FromString(data)
        except message.DecodeError as exc:
            return Malformed(f"malformed {request_class.DESCRIPTOR.name}: {exc}")

    return parse


async def _refuse(servicer: Any, name: str, request: Malformed, context: Any) -> None:
    async with servicer._rpc(name, context):  # counted, logged and answered like any error
        raise InvalidRequestError(request.message, field="request")


def _checked(servicer: Any, name: str, implementation: Any, streaming: bool) -> Any:
    """``implementation``, refusing a ``Malformed`` request first."""
    if streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await _refuse(servicer, name, request, context)
            async for response in implementation(request, context):
                yield response

        return stream

    async def unary(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await _refuse(servicer, name, request, context)
        return await implementation(request, context)

    return unary


def generic_handler(servicer: Any) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        serialize: Callable[[Any], bytes] = (
            _identity if method.name in RAW_RESPONSES else response_class.SerializeToString
        )
        implementation = getattr(servicer, method.name)
        deserialize: Callable[[bytes], Any] = _identity
        if method.name not in RAW_REQUESTS:
            assert not method.client_streaming, "a streamed request is parsed by its handler"
            deserialize = _parser(request_class)
            implementation = _checked(servicer, method.name, implementation, method.server_streaming)
        client_streaming = method.client_streaming or method.name in READ_BY_HANDLER
        if client_streaming and method.server_streaming:
            factory = grpc.stream_stream_rpc_method_handler
        elif client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            implementation, request_deserializer=deserialize, response_serializer=serialize
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
