"""Security end to end: bearer tokens, ACLs, TLS and mutual TLS (logstore/server/auth.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logstore.api.v1 import admin_pb2, logstore_pb2_grpc, records_pb2
from logstore.errors import NotAuthorizedError
from logstore.server.auth import AclRule, Authorizer, SecurityConfig, hash_token, principal_var
from tests.broker_fixture import BrokerProcess
from tests.certs import Certificates, make_certificates
from tests.server.helpers import TIMEOUT_S, batch, failure

ADMIN_TOKEN = "admin-secret-token"
READER_TOKEN = "reader-secret-token"

SECURITY = f"""
[principals.admin]
token_sha256 = "{hash_token(ADMIN_TOKEN)}"

[principals.reader]
token_sha256 = "{hash_token(READER_TOKEN)}"

[[acl]]
principal = "admin"
resource = "topic"
name = "*"
operations = ["admin"]

[[acl]]
principal = "admin"
resource = "group"
name = "*"
operations = ["admin"]

[[acl]]
principal = "reader"
resource = "topic"
name = "public.*"
operations = ["read"]

[[acl]]
principal = "client-a"
resource = "topic"
name = "mtls"
operations = ["read", "write", "admin"]
"""


def _metadata(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> BrokerProcess:
    root = tmp_path_factory.mktemp("secured")
    (root / "security.toml").write_text(SECURITY)
    process = BrokerProcess(root / "data", args=["--security-file", str(root / "security.toml")]).start()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def stub(secured: BrokerProcess):
    with grpc.insecure_channel(secured.address) as channel:
        yield logstore_pb2_grpc.LogStoreStub(channel)


def _call(method, request, token):
    return method(request, metadata=_metadata(token), timeout=TIMEOUT_S)


def test_a_call_without_a_token_is_unauthenticated(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub.ListTopics, admin_pb2.ListTopicsRequest(), None)
    problem = failure(caught.value)
    assert (problem.code, problem.reason) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_AUTHENTICATED")


def test_an_unknown_token_is_unauthenticated(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub.ListTopics, admin_pb2.ListTopicsRequest(), "guessed")
    assert failure(caught.value).code == grpc.StatusCode.UNAUTHENTICATED


def test_the_health_service_needs_no_token(secured):
    with grpc.insecure_channel(secured.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_admin_token_creates_and_writes(stub):
    _call(stub.CreateTopic, admin_pb2.CreateTopicRequest(name="public.news", partitions=1), ADMIN_TOKEN)
    request = records_pb2.ProduceRequest(
        partitions=[records_pb2.PartitionRecords(topic="public.news", partition=0, records=batch([b"hi"]))]
    )
    assert _call(stub.Produce, request, ADMIN_TOKEN).results[0].error.reason == ""


def test_reader_may_read_but_not_write_or_administer(stub):
    _call(stub.CreateTopic, admin_pb2.CreateTopicRequest(name="public.read", partitions=1), ADMIN_TOKEN)
    fetch = records_pb2.FetchRequest(partitions=[records_pb2.FetchPartition(topic="public.read", partition=0)])
    assert _call(stub.Fetch, fetch, READER_TOKEN).partitions[0].error.reason == ""
    produce = records_pb2.ProduceRequest(
        partitions=[records_pb2.PartitionRecords(topic="public.read", partition=0, records=batch([b"x"]))]
    )
    for method, request in (
        (stub.Produce, produce),
        (stub.DeleteTopic, admin_pb2.DeleteTopicRequest(name="public.read")),
        (stub.CreateTopic, admin_pb2.CreateTopicRequest(name="public.new", partitions=1)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _call(method, request, READER_TOKEN)
        problem = failure(caught.value)
        assert (problem.code, problem.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")
        assert problem.metadata["principal"] == "reader"


def test_reader_sees_only_the_topics_it_may_read(stub):
    _call(stub.CreateTopic, admin_pb2.CreateTopicRequest(name="private.ledger", partitions=1), ADMIN_TOKEN)
    _call(stub.CreateTopic, admin_pb2.CreateTopicRequest(name="public.listed", partitions=1), ADMIN_TOKEN)
    names = {t.name for t in _call(stub.ListTopics, admin_pb2.ListTopicsRequest(), READER_TOKEN).topics}
    assert "public.listed" in names
    assert "private.ledger" not in names


def test_describe_comes_with_read_write_and_admin_but_grants_neither():
    def rule(*operations: str) -> AclRule:
        return AclRule("p", "topic", "t", frozenset(operations))

    for right in ("describe", "read", "write", "admin"):
        assert rule(right).matches("p", "topic", "t", "describe")
    assert not rule("describe").matches("p", "topic", "t", "read")
    assert not rule("describe").matches("p", "topic", "t", "write")
    assert not rule("write").matches("p", "topic", "t", "read")
    assert rule("admin").matches("p", "topic", "t", "write")


def test_a_refusal_names_the_rights_that_would_allow_it():
    authorizer = Authorizer(SecurityConfig(enabled=True))
    token = principal_var.set("billing")
    try:
        with pytest.raises(NotAuthorizedError) as caught:
            authorizer.check("topic", "secrets", "describe")
    finally:
        principal_var.reset(token)
    assert caught.value.message == ("principal 'billing' may not describe topic 'secrets' "
                                    "(that needs describe, read, write or admin on it)")


def test_token_hash_command_matches_the_server_hash():
    result = subprocess.run(
        [sys.executable, "-m", "logstore", "token", "hash"], input=f"{READER_TOKEN}\n",
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == hash_token(READER_TOKEN)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _tls_broker(root: Path, certificates: Certificates, *extra: str) -> BrokerProcess:
    args = ["--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key), *extra]
    process = BrokerProcess(root / "data", args=args)
    process.start(wait=False)
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
    if "--tls-client-ca" in extra:
        cert, key = certificates.client("probe")
        credentials = grpc.ssl_channel_credentials(
            certificates.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
    process.wait_ready(credentials=credentials)
    return process


def test_tls_serves_clients_that_trust_the_ca(tmp_path, certificates):
    process = _tls_broker(tmp_path, certificates)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
        with grpc.secure_channel(process.address, credentials) as channel:
            stub = logstore_pb2_grpc.LogStoreStub(channel)
            stub.CreateTopic(admin_pb2.CreateTopicRequest(name="over-tls", partitions=1), timeout=TIMEOUT_S)
            assert [t.name for t in stub.ListTopics(admin_pb2.ListTopicsRequest(), timeout=TIMEOUT_S).topics] == ["over-tls"]
        with grpc.insecure_channel(process.address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                logstore_pb2_grpc.LogStoreStub(channel).ListTopics(admin_pb2.ListTopicsRequest(), timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        process.kill()


def test_mutual_tls_takes_the_principal_from_the_client_certificate(tmp_path, certificates):
    (tmp_path / "security.toml").write_text(SECURITY)
    process = _tls_broker(
        tmp_path, certificates, "--tls-client-ca", str(certificates.ca),
        "--security-file", str(tmp_path / "security.toml"),
    )
    try:
        ca = certificates.ca.read_bytes()
        cert, key = certificates.client("client-a")
        with grpc.secure_channel(process.address, grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())) as channel:
            stub = logstore_pb2_grpc.LogStoreStub(channel)
            stub.CreateTopic(admin_pb2.CreateTopicRequest(name="mtls", partitions=1), timeout=TIMEOUT_S)
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateTopic(admin_pb2.CreateTopicRequest(name="other", partitions=1), timeout=TIMEOUT_S)
            assert failure(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
        with grpc.secure_channel(process.address, grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                logstore_pb2_grpc.LogStoreStub(channel).ListTopics(admin_pb2.ListTopicsRequest(), timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # handshake refused
    finally:
        process.kill()
