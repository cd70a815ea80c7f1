"""The client and the CLI against a broker with TLS, tokens and ACLs (client/channel.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from logstore import Admin, Consumer, Producer
from logstore.errors import (
    InvalidConfigError,
    NotAuthenticatedError,
    NotAuthorizedError,
    UnavailableError,
)
from logstore.server.auth import hash_token
from tests.broker_fixture import BrokerProcess
from tests.certs import make_certificates

WRITER = "writer-token-1"
READER = "reader-token-1"
BILLING = "billing-token-1"  # no rights at all
APPENDER = "appender-token-1"  # write, and nothing else, on appends*
SECURITY = f"""
[principals.writer]
token_sha256 = "{hash_token(WRITER)}"
[principals.reader]
token_sha256 = "{hash_token(READER)}"
[principals.billing]
token_sha256 = "{hash_token(BILLING)}"
[principals.appender]
token_sha256 = "{hash_token(APPENDER)}"
[[acl]]
principal = "appender"
resource = "topic"
name = "appends*"
operations = ["write"]
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


def _cli(*args: str, input_text: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSTORE_")}
    return subprocess.run([sys.executable, "-m", "logstore", *args], input=input_text,
                          capture_output=True, text=True, env=env, timeout=60)


def test_a_refused_produce_names_the_write_it_needs(secured):
    process, certs = secured
    with Admin(process.address, tls_ca=str(certs.ca), token=WRITER) as admin:
        admin.create_topic("secrets", partitions=1)
    refused = _cli("produce", "secrets", "--server", process.address, "--tls-ca", str(certs.ca),
                   "--token", BILLING, input_text="a line\n")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "logstore: error: principal 'billing' may not write topic 'secrets' "
        "(that needs write or admin on it) (NOT_AUTHORIZED)"
    ]


def test_a_refused_consumer_names_the_read_it_needs(secured):
    process, certs = secured
    with Admin(process.address, tls_ca=str(certs.ca), token=WRITER) as admin:
        admin.create_topic("ledger", partitions=1)
    with Consumer(process.address, tls_ca=str(certs.ca), token=BILLING) as consumer, \
            pytest.raises(NotAuthorizedError) as caught:
        consumer.assign("ledger")
    assert (caught.value.operation, caught.value.name) == ("read", "ledger")
    assert "may not read topic 'ledger'" in caught.value.message


def test_write_alone_is_enough_to_produce_and_describe(secured):
    process, certs = secured
    ca = str(certs.ca)
    with Admin(process.address, tls_ca=ca, token=WRITER) as admin:
        admin.create_topic("appends-only", partitions=2)
    with Producer(process.address, tls_ca=ca, token=APPENDER) as producer:
        metadata = producer.send("appends-only", b"x", key=b"k").result(timeout=10)
    assert metadata.partition in (0, 1)
    with Admin(process.address, tls_ca=ca, token=APPENDER) as admin:
        assert admin.describe_topic("appends-only").partition_count == 2
        assert [t.name for t in admin.list_topics()] == ["appends-only"]
    with Consumer(process.address, tls_ca=ca, token=APPENDER) as consumer, \
            pytest.raises(NotAuthorizedError) as caught:
        consumer.assign("appends-only")
        consumer.poll(timeout=2)
    assert caught.value.operation == "read"


# -- connection failures: what is likely wrong, and the CA file used ---------------------------


def test_a_plaintext_client_against_a_tls_broker_is_told_to_pass_the_ca(secured):
    process, _ = secured
    with Admin(process.address, token=WRITER) as admin, pytest.raises(UnavailableError) as caught:
        admin.list_topics()
    assert "may require TLS" in caught.value.message
    assert "--tls-ca" in caught.value.message and "tls_ca=" in caught.value.message


def test_the_cli_says_it_in_one_line_without_grpc_log_noise(secured):
    process, _ = secured
    result = _cli("topic", "list", "--server", process.address)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"logstore: error: cannot reach the broker at {process.address}: "
                           "the broker may require TLS")
    assert line.endswith("(UNAVAILABLE)")


def test_a_tls_client_against_a_plaintext_broker_is_told_it_may_not_use_tls(broker, secured):
    _, certs = secured
    with Admin(broker.address, tls_ca=str(certs.ca)) as admin, \
            pytest.raises(UnavailableError) as caught:
        admin.list_topics()
    assert "may not use TLS" in caught.value.message
    assert f"CA file {str(certs.ca)!r}" in caught.value.message


def test_a_certificate_that_does_not_verify_names_the_ca_file_used(secured, tmp_path):
    process, _ = secured
    other = make_certificates(tmp_path / "other-ca")
    result = _cli("topic", "list", "--server", process.address, "--tls-ca", str(other.ca),
                  "--token", WRITER)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"does not verify against the CA file {str(other.ca)!r}" in line


def test_a_broker_that_wants_a_client_certificate_says_so(secured, tmp_path):
    _, certs = secured
    process = BrokerProcess(tmp_path / "data", args=[
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--tls-client-ca", str(certs.ca)])
    process.start(wait=False)
    cert, key = certs.client("probe")
    try:
        process.wait_ready(credentials=grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), key.read_bytes(), cert.read_bytes()))
        with Admin(process.address, tls_ca=str(certs.ca)) as admin, \
                pytest.raises(UnavailableError) as caught:
            admin.list_topics()
        assert "may require a client certificate" in caught.value.message
        assert "--tls-cert" in caught.value.message
    finally:
        process.kill()


def test_a_pem_file_that_does_not_exist_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere" / "ca.crt")
    with pytest.raises(InvalidConfigError) as caught:
        Admin("127.0.0.1:1", tls_ca=missing)
    assert caught.value.key == "tls_ca"
    assert missing in caught.value.message and "No such file" in caught.value.message
    result = _cli("topic", "list", "--server", "127.0.0.1:1", "--tls-ca", missing)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"logstore: error: cannot read the tls_ca file {missing!r} (tls_ca=, --tls-ca / "
        f"$LOGSTORE_TLS_CA): No such file or directory (INVALID_CONFIG)"
    ]
