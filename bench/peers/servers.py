"""The servers of the benchmark: a logstore broker, redis-server, nats-server -js and a raw gRPC
server, each on a free loopback port with its own temporary directory.

``Servers`` starts the ones asked for and is a context manager: on leaving it (normally, on an
exception, on Ctrl-C) every process it started is stopped, SIGTERM first and SIGKILL after
``STOP_TIMEOUT_S``, and its directory removed. Servers run in their own session so a Ctrl-C in the
terminal reaches only the harness, which stops them in order.

redis-server and nats-server come from Debian's packages; ``ensure_installed`` runs
``apt-get install`` for the missing ones and says so.

Settings (the durability tiers are in ``TIERS``):

- logstore: ``logstore serve`` with defaults; the tier is the topic's ``flush`` config.
- Redis: ``appendonly yes`` with ``appendfsync everysec`` (page tier) or ``always`` (fsync tier,
  set with CONFIG SET between tiers), ``save ""`` (no RDB snapshots: AOF is the durability being
  measured) and ``auto-aof-rewrite-percentage 0`` (no rewrite fork in the middle of a timed run;
  the harness rewrites the AOF between runs, untimed, to keep it small).
- NATS: ``nats-server -js`` with a store directory, as shipped; streams use file storage, one
  replica. JetStream 2.9 has no setting to fsync each message (``sync_interval`` came in 2.10),
  so NATS sits in the page tier only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

#: Durability tiers: what each system is configured with in each.
TIERS: dict[str, dict[str, str]] = {
    "page": {
        "logstore": "topic flush=never (page cache; fsync only on roll and close)",
        "redis": "appendonly yes, appendfsync everysec",
        "nats": "JetStream file storage as shipped (2.9: no per-message fsync)",
    },
    "fsync": {
        "logstore": "topic flush=always (fdatasync before acks=all answers)",
        "redis": "appendonly yes, appendfsync always",
    },
}
LOGSTORE_FLUSH = {"page": "never", "fsync": "always"}
REDIS_APPENDFSYNC = {"page": "everysec", "fsync": "always"}

#: Debian package of each server binary.
PACKAGES = {"redis-server": "redis-server", "nats-server": "nats-server", "etcd": "etcd-server"}


def which(binary: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_PATH])
    return shutil.which(binary, path=path)


def ensure_installed(binaries: list[str]) -> None:
    """apt-get install the Debian packages of the missing ``binaries``, saying so."""
    missing = [b for b in binaries if which(b) is None]
    if not missing:
        return
    packages = [PACKAGES[b] for b in missing]
    print(f"bench: {', '.join(missing)} not found: installing the Debian package(s) "
          f"{' '.join(packages)} with apt-get", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
    completed = subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], env=env,
                               check=False)
    still = [b for b in missing if which(b) is None]
    if completed.returncode != 0 or still:
        raise RuntimeError(f"could not install {' '.join(packages)} (apt-get exited with "
                           f"{completed.returncode}); install them, or leave those systems out "
                           f"with --only")


def child_env() -> dict[str, str]:
    """The environment of servers and clients: they import the same ``bench`` and ``logstore``
    as this process (whatever PYTHONPATH or working directory found them)."""
    import bench
    import logstore

    roots = [str(Path(bench.__file__).resolve().parent.parent),
             str(Path(logstore.__file__).parent.parent)]
    existing = os.environ.get("PYTHONPATH")
    path = os.pathsep.join(dict.fromkeys(roots + ([existing] if existing else [])))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0.0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One server process: ``name``, ``address`` (host:port), its directory and log."""

    name: str
    command: list[str]
    directory: Path
    port: int
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
                env=None if self.env is None else dict(self.env), start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                               f"{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nats_greeting(address: str) -> dict[str, Any]:
    """The server's version from its INFO greeting; raises until JetStream is enabled."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        line = sock.makefile("rb").readline().decode()
    if not line.startswith("INFO "):
        raise RuntimeError(f"unexpected greeting {line!r}")
    info = json.loads(line[5:])
    if not info.get("jetstream"):
        raise RuntimeError("JetStream is not enabled yet")
    return {"version": info["version"], "jetstream": True, "max_payload": info.get("max_payload")}


def wait_until(server: Server, probe: Any, what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 - not up yet; retried until the deadline
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not {what} within {START_TIMEOUT_S:.0f} s ({last}):\n"
                       f"{server.log_tail()}")


class Servers:
    """The servers of one benchmark run; ``with Servers(root, env) as servers: servers.start_*``."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = env
        self.started: dict[str, Server] = {}

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for server in reversed(list(self.started.values())):
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
        self.started.clear()

    def _new(self, name: str, command_for: Any, env: Mapping[str, str] | None = None) -> Server:
        directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        port = free_port()
        server = Server(name, command_for(directory, port), directory, port, env)
        self.started[name] = server
        server.start()
        return server

    def start_logstore(self) -> Server:
        def command(directory: Path, port: int) -> list[str]:
            return [sys.executable, "-m", "logstore", "serve", "--data-dir", str(directory / "data"),
                    "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
                    "--log-format", "text", "--log-level", "warning", "--grace-period", "2"]

        server = self._new("logstore", command, self.env)

        def ready() -> None:
            from logstore import Admin

            with Admin(server.address, timeout=1.0) as admin:
                admin.list_topics()

        wait_until(server, ready, "answer ListTopics")
        server.info = {"version": _logstore_version(), "command": " ".join(server.command[1:])}
        return server

    def start_redis(self) -> Server:
        binary = which("redis-server")
        assert binary is not None

        def command(directory: Path, port: int) -> list[str]:
            return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                    "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                    "--auto-aof-rewrite-percentage", "0", "--daemonize", "no",
                    "--protected-mode", "yes", "--logfile", ""]

        server = self._new("redis", command)

        def ready() -> dict[str, Any]:
            import redis

            client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
            try:
                client.ping()
                info = client.info("server")
                keys = ("appendonly", "appendfsync", "save", "auto-aof-rewrite-percentage",
                        "io-threads", "maxmemory")
                config = {key: client.config_get(key).get(key) for key in keys}
            finally:
                client.close()
            return {"version": info["redis_version"], "config": config}

        server.info = wait_until(server, ready, "answer PING")
        server.info["command"] = " ".join(server.command)
        return server

    def start_nats(self) -> Server:
        binary = which("nats-server")
        assert binary is not None

        def command(directory: Path, port: int) -> list[str]:
            return [binary, "-js", "-sd", str(directory / "jetstream"), "-a", "127.0.0.1",
                    "-p", str(port), "-n", "bench"]

        server = self._new("nats", command)

        server.info = wait_until(server, lambda: nats_greeting(server.address),
                                 "greet with JetStream enabled")
        server.info["command"] = " ".join(server.command)
        server.info["streams"] = "file storage, 1 replica, limits retention (defaults)"
        return server

    def start_ceiling(self) -> Server:
        def command(directory: Path, port: int) -> list[str]:
            return [sys.executable, "-m", "bench.peers.grpc_ceiling", "--listen",
                    f"127.0.0.1:{port}"]

        server = self._new("ceiling", command, self.env)

        def ready() -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass

        wait_until(server, ready, "accept connections")
        server.info = {"command": " ".join(server.command[1:])}
        return server


def _logstore_version() -> str:
    try:
        from logstore import __version__
    except ImportError:
        return "?"
    return str(__version__)
