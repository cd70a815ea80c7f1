"""Test certificates made with the openssl command: a CA, a server certificate for 127.0.0.1 and
localhost, and client certificates whose common name is the principal (mutual TLS)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    directory: Path

    def client(self, common_name: str) -> tuple[Path, Path]:
        """(certificate, key) of a client certificate signed by the CA."""
        cert = self.directory / f"{common_name}.crt"
        key = self.directory / f"{common_name}.key"
        if not cert.exists():
            _signed(self.directory, common_name, cert, key, extensions=None)
        return cert, key


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(directory: Path, common_name: str, cert: Path, key: Path, extensions: str | None) -> None:
    request = directory / f"{common_name}.csr"
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
         "-subj", f"/CN={common_name}", cwd=directory)
    command = ["x509", "-req", "-in", str(request), "-CA", "ca.crt", "-CAkey", "ca.key",
               "-CAcreateserial", "-out", str(cert), "-days", "2"]
    if extensions:
        ext_file = directory / f"{common_name}.ext"
        ext_file.write_text(extensions)
        command += ["-extfile", str(ext_file)]
    _run(*command, cwd=directory)


def make_certificates(directory: Path, ips: tuple[str, ...] = ("127.0.0.1",)) -> Certificates:
    """A CA and a server certificate for ``ips`` and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "2", "-subj", "/CN=logstore test CA", cwd=directory)
    _signed(
        directory, "server", directory / "server.crt", directory / "server.key",
        extensions="subjectAltName=" + "".join(f"IP:{ip}," for ip in ips) + "DNS:localhost\n",
    )
    return Certificates(directory / "ca.crt", directory / "server.crt", directory / "server.key", directory)


@contextlib.contextmanager
def tls_broker(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A broker with a TLS certificate on its own data directory, killed on exit: (the
    ``BrokerProcess``, the CA file clients pass as ``tls_ca``)."""
    import grpc

    from tests.broker_fixture import BrokerProcess

    certs = make_certificates(tmp_path / "certs")
    broker = BrokerProcess(tmp_path / "data", args=["--tls-cert", str(certs.server_cert),
                                                    "--tls-key", str(certs.server_key)])
    broker.start(wait=False)
    try:
        broker.wait_ready(credentials=grpc.ssl_channel_credentials(certs.ca.read_bytes()))
        yield broker, str(certs.ca)
    finally:
        broker.kill()
