"""The standard gRPC health service and server reflection."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.server.helpers import TIMEOUT_S

SERVICE = "logstore.api.v1.LogStore"


def _check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S
        )
    return response.status


def _reflect(address: str, request: reflection_pb2.ServerReflectionRequest):
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_S))
    return response


def test_health_check_of_the_server_is_serving(module_broker):
    assert _check(module_broker.address, "") == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_the_logstore_service_is_serving(module_broker):
    assert _check(module_broker.address, SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(module_broker):
    with grpc.insecure_channel(module_broker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            code = err.code()
        else:
            code = grpc.StatusCode.OK
    assert code == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_logstore_health_and_reflection_services(module_broker):
    response = _reflect(module_broker.address, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_reflection_describes_the_logstore_service(module_broker):
    response = _reflect(
        module_broker.address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    services = {f"{f.package}.{s.name}": s for f in files for s in f.service}
    methods = {m.name for m in services[SERVICE].method}
    assert {"CreateTopic", "Produce", "ProduceStream", "Fetch", "Subscribe", "ListOffsets"} <= methods
