"""A ``logstore serve`` subprocess the nemesis can kill, pause and restart on one address.

A clustered broker gets its own loopback ``host`` and the ``--cluster`` arguments in ``args``.
The port stays the same across restarts, so clients reconnect on their own. The broker's log
(JSON lines, level info) is appended to ``<work dir>/broker.log``; ``recovery_reports`` picks the
lines in which recovery says what it cut.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Messages of the storage layer's recovery that say what it cut (``logstore.storage.recovery``).
RECOVERY_MESSAGES = ("recovery cut", "recovery took segment", "log start", "overlaps")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None, *,
                 host: str = "127.0.0.1", args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.host = host
        #: More ``logstore serve`` arguments (a clustered broker's ``--cluster ...``).
        self.args = list(args or [])
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until the health check says SERVING; returns the seconds it took."""
        started = time.monotonic()
        self.start_process()
        self.wait_ready(timeout)
        return time.monotonic() - started

    def start_process(self) -> None:
        """Start, without waiting."""
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "logstore", "serve", "--data-dir", str(self.data_dir),
                 "--listen", self.address, "--metrics-listen", "", "--grace-period", "5",
                 "--log-level", "info", *self.args],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self.paused = False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the broker exited with {self.process.returncode}; "
                                       f"see {self.log_path}")
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"the broker did not serve within {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL (a stopped broker too) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None
        self.paused = False

    def pause(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            self.paused = True

    def resume(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        self.paused = False

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code."""
        self.terminate()
        return self.wait_stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM (once: a second one, after the broker's clean shutdown removed its handler,
        would kill it), without waiting."""
        if self.paused:
            self.resume()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> int | None:
        """Wait for the exit after ``terminate`` (SIGKILL after ``timeout``: None)."""
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.process = None
        return code


def recovery_reports(log_path: Path, since: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The broker's recovery warnings after byte ``since`` of its log, and the log's size."""
    try:
        with open(log_path, "rb") as file:
            file.seek(since)
            data = file.read()
    except FileNotFoundError:
        return [], since
    reports = []
    for line in data.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        message = str(entry.get("msg", ""))
        if str(entry.get("logger", "")).startswith("logstore.storage") and any(
                text in message for text in RECOVERY_MESSAGES):
            reports.append(entry)
    return reports, since + len(data)
