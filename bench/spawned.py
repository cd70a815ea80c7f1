"""A ``logstore serve`` process for a benchmark: a temporary data directory, a free loopback port,
started and waited for, stopped and removed again."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence


class Broker:
    def __init__(self, prefix: str = "logstore-bench-", *, source: str | None = None,
                 args: Sequence[str] = ()) -> None:
        """``source``: a checkout whose ``logstore`` package the broker runs (default: the one
        this process imports); ``args``: more ``logstore serve`` arguments (``--config FILE``)."""
        self.directory = tempfile.mkdtemp(prefix=prefix)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        env = None if source is None else dict(os.environ, PYTHONPATH=os.path.abspath(source))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "logstore", "serve", "--data-dir", self.directory,
             "--listen", self.address, "--metrics-listen", "", "--log-level", "warning", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            cwd=None if source is None else self.directory,
        )
        from logstore.client import Admin

        deadline = time.monotonic() + 30
        with Admin(self.address, timeout=1.0) as admin:
            while True:
                try:
                    admin.list_topics()
                    return
                except Exception:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.stop()
                        raise RuntimeError("the benchmark broker did not start") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
