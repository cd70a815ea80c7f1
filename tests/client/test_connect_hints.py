"""What a connection failure is likely to mean, from gRPC's words and the credentials used
(logstore/client/connect_hints.py); the real handshakes are in test_security.py."""

from __future__ import annotations

from logstore.client.config import Credentials
from logstore.client.connect_hints import connection_hint, remember

CLOSED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: Socket closed"
REFUSED = "last error: UNKNOWN: ipv4:127.0.0.1:9: Failed to connect to remote host: Connection refused"
WRONG_VERSION = "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: WRONG_VERSION_NUMBER"
NOT_VERIFIED = "Tls handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: unable to get local issuer"
PEER_NAME = "Peer name db.example is not in peer certificate"


def test_refused_means_nothing_listens() -> None:
    remember("hint-a:1", Credentials())
    assert "nothing is listening" in connection_hint(REFUSED, "hint-a:1")


def test_a_closed_plaintext_connection_suggests_tls() -> None:
    remember("hint-b:1", Credentials())
    assert "may require TLS" in connection_hint(CLOSED, "hint-b:1")


def test_a_closed_tls_connection_suggests_a_client_certificate_or_distrust_of_it() -> None:
    remember("hint-c:1", Credentials(tls_ca="ca.pem"))
    assert "may require a client certificate" in connection_hint(CLOSED, "hint-c:1")
    remember("hint-c:1", Credentials(tls_ca="ca.pem", tls_cert="me.pem", tls_key="me.key"))
    assert "may not trust that client certificate" in connection_hint(CLOSED, "hint-c:1")


def test_a_failed_handshake_suggests_a_plaintext_broker_and_names_the_ca() -> None:
    remember("hint-d:1", Credentials(tls_ca="ca.pem"))
    hint = connection_hint(WRONG_VERSION, "hint-d:1")
    assert "may not use TLS" in hint and "CA file 'ca.pem'" in hint


def test_an_unverified_certificate_names_the_ca_file_or_the_system_cas() -> None:
    remember("hint-e:1", Credentials(tls_ca="ca.pem"))
    assert "does not verify against the CA file 'ca.pem'" in connection_hint(NOT_VERIFIED, "hint-e:1")
    remember("hint-e:1", Credentials(tls_cert="me.pem", tls_key="me.key"))
    assert "the system's default CAs" in connection_hint(NOT_VERIFIED, "hint-e:1")


def test_a_certificate_for_another_name_says_so() -> None:
    remember("db.example:1", Credentials(tls_ca="ca.pem"))
    assert "not for the host name in 'db.example:1'" in connection_hint(PEER_NAME, "db.example:1")


def test_words_it_does_not_know_give_no_hint() -> None:
    remember("hint-f:1", Credentials())
    assert connection_hint("Deadline Exceeded", "hint-f:1") == ""
    assert connection_hint(CLOSED, None) != ""  # an address never opened counts as plaintext
