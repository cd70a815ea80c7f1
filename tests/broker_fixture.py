"""A real ``logstore serve`` process on a free loopback port, for end-to-end tests.

Loaded as a pytest plugin (``-p tests.broker_fixture`` in pyproject.toml). Fixtures:

- ``broker``: a fresh broker on its own data directory, stopped (SIGTERM) after the test.
- ``module_broker``: one broker shared by a test module (use unique topic names).
- ``broker_factory``: ``broker_factory(data_dir=None, args=(), config=None)`` starts more.

A ``BrokerProcess`` can ``stop()`` (SIGTERM, returns the exit code), ``kill()`` (SIGKILL),
``start()`` again on the same data directory and port, and ``restart()``.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: Ports handed out come from below the kernel's ephemeral range: a port the kernel picks for an
#: outgoing connection or a ``bind(0)`` (a broker's stream or replica port, an etcd member
#: dialling its peers) can then never take one that a test has chosen but not bound yet.
_PORT_RANGE = (max(1024, _ephemeral_low() - 12_000), _ephemeral_low())
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range, not handed out before
    in this process."""
    for _ in range(1000):
        port = random.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


class BrokerProcess:
    def __init__(self, data_dir: Path, *, args: Sequence[str] = (), config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.config = config
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "logstore", "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.address,
            "--metrics-listen", self.metrics_address,
            "--grace-period", "5",
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        return command + self.args

    def start(self, wait: bool = True) -> BrokerProcess:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.command(), stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        log_file.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(
        self, timeout: float = START_TIMEOUT_S, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        channel = (
            grpc.insecure_channel(self.address)
            if credentials is None
            else grpc.secure_channel(self.address, credentials)
        )
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"broker exited with {self.process.returncode}:\n{self.log()}")
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"broker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it was not running)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"broker ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def factory(data_dir: Path | None = None, args: Sequence[str] = (), config: Path | None = None) -> BrokerProcess:
        directory = data_dir or tmp_path / f"data{len(started)}"
        process = BrokerProcess(directory, args=args, config=config).start()
        started.append(process)
        return process

    yield factory
    for process in started:
        process.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    return broker_factory()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("module-broker") / "data").start()
    yield process
    process.kill()
