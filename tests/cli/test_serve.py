"""``logstore serve`` path options that do not lead anywhere: one clear line and exit 2, before
the data directory is touched (the data directory's own cases are in tests/faults/test_startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker_fixture import ROOT, free_port
from tests.certs import make_certificates


def serve(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logstore", "serve", "--data-dir", str(tmp_path / "data"),
         "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "", *options],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


@pytest.mark.parametrize("option", ["--config", "--security-file"])
@pytest.mark.parametrize("what", ["missing", "a folder"])
def test_a_file_option_that_names_no_file_exits_2_with_one_line(tmp_path, option, what):
    path = tmp_path / "nowhere" / "x.toml"
    if what == "a folder":
        path = tmp_path / "folder"
        path.mkdir()
    result = serve(tmp_path, option, str(path))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert str(path) in line
    assert ("No such file" in line or "does not exist" in line) if what == "missing" else "Is a directory" in line
    assert not (tmp_path / "data").exists()


def test_unreadable_tls_files_are_named_with_their_option(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    missing = str(tmp_path / "nowhere.pem")
    for options, key in (
        (["--tls-cert", missing, "--tls-key", str(certs.server_key)], "tls_cert"),
        (["--tls-cert", str(certs.server_cert), "--tls-key", missing], "tls_key"),
        (["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
          "--tls-client-ca", missing], "tls_client_ca"),
    ):
        result = serve(tmp_path, *options)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert f"cannot read the {key} file {missing!r} (--{key.replace('_', '-')})" in line
    assert not (tmp_path / "data").exists()
