"""What is likely wrong when the client cannot reach a broker, in words a user can act on.

gRPC reports a failed connection as UNAVAILABLE with the transport's own words ("Socket closed",
"Tls handshake failed ... WRONG_VERSION_NUMBER"). ``connection_hint`` reads those words together
with the credentials the channel was opened with and says what to change:

| what gRPC says | client | hint |
| --- | --- | --- |
| Connection refused | any | nothing listens at the address |
| Socket closed / Connection reset | plaintext | the broker may require TLS: pass ``--tls-ca`` |
| Socket closed / Connection reset | TLS | the broker may require a client certificate (or not trust it) |
| WRONG_VERSION_NUMBER, other handshake failures | TLS | the broker may not use TLS |
| CERTIFICATE_VERIFY_FAILED | TLS | the broker's certificate does not verify against the CA file |
| Peer name ... is not in peer certificate | TLS | the certificate is not for the host name used |

Every TLS hint names the CA file used (or says the system's CAs were used). ``remember`` is
called by ``open_channel``; the table it fills is keyed by address and guarded by the GIL (one
dict assignment per channel), so two clients of one address with different credentials see the
hint of the last one opened.
"""

from __future__ import annotations

from logstore.client.config import TLS_CA_ENV, TLS_CERT_ENV, Credentials

#: The credentials the latest channel to each address was opened with.
_credentials_by_server: dict[str, Credentials] = {}

CA_OPTIONS = f"--tls-ca FILE (Python: tls_ca=, or ${TLS_CA_ENV})"
CERT_OPTIONS = f"--tls-cert/--tls-key (Python: tls_cert=/tls_key=, or ${TLS_CERT_ENV}/_KEY)"


def remember(server: str, credentials: Credentials) -> None:
    """Note how the channel to ``server`` connects, for the hints of its failures."""
    _credentials_by_server[server] = credentials


def connection_hint(details: str, server: str | None) -> str:
    """A sentence on what is likely wrong, or "" when the words say nothing we can explain."""
    text = details.lower()
    credentials = _credentials_by_server.get(server or "", Credentials())
    if "connection refused" in text:
        return "nothing is listening there; is the broker running, and is the address right?"
    if not credentials.tls:
        if "socket closed" in text or "connection reset" in text:
            return f"the broker may require TLS; pass the CA that signed its certificate with {CA_OPTIONS}"
        return ""
    ca = f"CA file {credentials.tls_ca!r}" if credentials.tls_ca else "the system's default CAs"
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return (f"the broker's certificate does not verify against the {ca}; pass the CA that "
                f"signed it with {CA_OPTIONS}")
    if "peer name" in text:
        return f"the broker's certificate is not for the host name in {server!r} (checked with the {ca})"
    if "socket closed" in text or "connection reset" in text:
        if credentials.tls_cert:
            return (f"the broker closed the TLS connection (client certificate "
                    f"{credentials.tls_cert!r}, {ca}); it may not trust that client certificate")
        return (f"the broker closed the TLS connection ({ca}); it may require a client "
                f"certificate: pass {CERT_OPTIONS}")
    if "handshake" in text or "ssl" in text:
        return (f"the TLS handshake failed ({ca}); the broker may not use TLS: connect without "
                f"--tls-ca / tls_ca= for plaintext")
    return ""
