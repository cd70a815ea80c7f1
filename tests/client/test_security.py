"""The client and the CLI against a broker with TLS, tokens and ACLs (client/channel.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from logstore import Admin, Consumer, Producer
from logstore.errors import NotAuthenticatedError, NotAuthorizedError
from logstore.server.auth import hash_token
from tests.broker_fixture import BrokerProcess
from tests.certs import make_certificates

WRITER = "writer-token-1"
READER = "reader-token-1"
SECURITY = f"""
[principals.writer]
token_sha256 = "{hash_token(WRITER)}"
[principals.reader]
token_sha256 = "{hash_token(READER)}"
[[acl]]
principal = "writer"
resource = "topic"
name = "*"
operations = ["admin"]
[[acl]]
principal = "reader"
resource = "topic"
name = "*"
operations = ["read"]
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls-broker")
    certs = make_certificates(root / "certs")
    (root / "security.toml").write_text(SECURITY)
    process = BrokerProcess(
        root / "data",
        args=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
              "--security-file", str(root / "security.toml")],
    )
    process.start(wait=False)
    process.wait_ready(credentials=grpc.ssl_channel_credentials(certs.ca.read_bytes()))
    yield process, certs
    process.kill()


def test_clients_with_a_token_over_tls_round_trip(secured):
    process, certs = secured
    ca = str(certs.ca)
    with Admin(process.address, tls_ca=ca, token=WRITER) as admin:
        admin.create_topic("secure-orders", partitions=1)
    with Producer(process.address, tls_ca=ca, token=WRITER) as producer:
        producer.send("secure-orders", b"sealed", partition=0).result(timeout=10)
    with Consumer(process.address, tls_ca=ca, token=READER, auto_offset_reset="earliest") as consumer:
        consumer.assign("secure-orders")
        records = consumer.poll(timeout=5)
    assert [r.value for r in records] == [b"sealed"]


def test_a_client_without_a_token_is_refused(secured):
    process, certs = secured
    with Admin(process.address, tls_ca=str(certs.ca)) as admin, pytest.raises(NotAuthenticatedError):
        admin.list_topics()


def test_a_reader_may_not_create_topics(secured):
    process, certs = secured
    with Admin(process.address, tls_ca=str(certs.ca), token=READER) as admin, \
            pytest.raises(NotAuthorizedError):
        admin.create_topic("not-yours")


def test_the_cli_takes_tls_and_token_options(secured):
    process, certs = secured
    base = [sys.executable, "-m", "logstore"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSTORE_")}
    options = ["--server", process.address, "--tls-ca", str(certs.ca)]
    created = subprocess.run(
        [*base, "topic", "create", "cli-secure", "--partitions", "1", *options, "--token", WRITER],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    refused = subprocess.run(
        [*base, "topic", "delete", "cli-secure", *options], capture_output=True, text=True,
        env=env, timeout=60,
    )
    assert refused.returncode == 1
    assert "NOT_AUTHENTICATED" in refused.stderr
    listed = subprocess.run(
        [*base, "topic", "list", *options], capture_output=True, text=True, timeout=60,
        env={**env, "LOGSTORE_TOKEN": READER},
    )
    assert listed.returncode == 0, listed.stderr
    assert "cli-secure" in listed.stdout
