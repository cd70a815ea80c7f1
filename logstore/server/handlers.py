"""The method table of the LogStore service, built from the proto's descriptors.

Like the generated ``add_LogStoreServicer_to_server``, except for the methods that carry record
bytes: their servicer methods take or return *serialized* messages so that batches are never
copied by protobuf (``wire.py``) —

- ``Produce`` and ``ProduceStream`` receive the raw request bytes (parsed into memoryviews);
- ``Fetch`` and ``Subscribe`` return the serialized response bytes.

Every other method uses the generated message classes as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from logstore.api.v1 import logstore_pb2

SERVICE = logstore_pb2.DESCRIPTOR.services_by_name["LogStore"]
RAW_REQUESTS = {"Produce", "ProduceStream"}
RAW_RESPONSES = {"Fetch", "Subscribe"}


def _identity(data: Any) -> Any:
    return data


def generic_handler(servicer: Any) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        deserialize: Callable[[bytes], Any] = (
            _identity if method.name in RAW_REQUESTS else request_class.FromString
        )
        serialize: Callable[[Any], bytes] = (
            _identity if method.name in RAW_RESPONSES else response_class.SerializeToString
        )
        implementation = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            factory = grpc.stream_stream_rpc_method_handler
        elif method.client_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif method.server_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(
            implementation, request_deserializer=deserialize, response_serializer=serialize
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
