"""Running ``logstore`` commands in tests.

- ``cli(*args, stdin=b"")`` runs a command in-process through ``logstore.cli.main.main`` against
  the module's broker (``--server`` is added for client commands) and returns a ``Run`` with the
  exit code, stdout bytes and stderr text.
- ``logstore_process(*args, stdin=b"")`` runs the real entry point in a subprocess.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.broker_fixture import ROOT, BrokerProcess

CLIENT_COMMANDS = ("topic", "produce", "consume", "group", "queue", "export", "import")


@dataclass
class Run:
    code: int
    stdout: bytes
    stderr: str

    @property
    def lines(self) -> list[bytes]:
        return self.stdout.splitlines()


@pytest.fixture(scope="module")
def server(module_broker: BrokerProcess) -> str:
    return module_broker.address


@pytest.fixture
def cli(server: str, capsysbinary: pytest.CaptureFixture[bytes],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    from logstore.cli.main import main

    def run(*args: str, stdin: bytes = b"") -> Run:
        argv = list(args)
        if argv and argv[0] in CLIENT_COMMANDS and "--server" not in argv and "--help" not in argv:
            argv += ["--server", server]
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsysbinary.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsysbinary.readouterr()
        return Run(code, out, err.decode(errors="replace"))

    return run


@pytest.fixture
def logstore_process(server: str) -> Callable[..., Run]:
    def run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Run:
        completed = subprocess.run(
            [sys.executable, "-m", "logstore", *args], input=stdin, capture_output=True,
            cwd=ROOT, timeout=60, env=dict(os.environ, **(env or {})),
        )
        return Run(completed.returncode, completed.stdout, completed.stderr.decode(errors="replace"))

    return run


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    hint = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:50]
    return f"{hint}-{uuid.uuid4().hex[:6]}"
