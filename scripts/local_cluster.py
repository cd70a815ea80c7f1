"""``scripts/cluster``: start, inspect and stop a local logstore cluster on loopback.

Etcd members listen on 127.0.0.1 (free ports); broker ``i`` (1..N) listens on 127.0.0.(10+i):7070
with metrics on :7071, its data in DIR/broker-i, its log in DIR/broker-i.log. DIR/cluster.json
records the processes, so ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTER = ROOT / ".logstore-cluster"
BROKER_PORT = 7070


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(command: list[str], log_path: Path) -> int:
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=ROOT,
        )
    return process.pid


def wait(check, what: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"cluster: {what} not ready after {timeout_s:.0f} s (see the logs in the cluster dir)")


def etcd_healthy(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=1) as answer:
            return bool(json.load(answer).get("health") == "true")
    except (OSError, ValueError):
        return False


def serving(address: str) -> bool:
    """The broker's gRPC health check says SERVING (it has joined the cluster)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def up(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="logstore-cluster-"))
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "cluster.json").exists():
        print(f"cluster: {directory} already holds a cluster; 'scripts/cluster down --dir {directory}' first",
              file=sys.stderr)
        return 2
    members = [(f"m{i}", free_port(), free_port()) for i in range(args.etcd)]
    initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    state: dict = {"dir": str(directory), "etcd": [], "brokers": []}
    for name, client, peer in members:
        pid = spawn([
            "etcd", "--name", name, "--data-dir", str(directory / f"etcd-{name}"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", directory.name, "--log-level", "warn", "--logger", "zap",
        ], directory / f"etcd-{name}.log")
        state["etcd"].append({"name": name, "address": f"127.0.0.1:{client}", "pid": pid})
    (directory / "cluster.json").write_text(json.dumps(state, indent=2))
    POINTER.write_text(str(directory))
    for member in state["etcd"]:
        wait(lambda m=member: etcd_healthy(m["address"]), f"etcd {member['name']}")
    endpoints = ",".join(m["address"] for m in state["etcd"])
    for broker_id in range(1, args.brokers + 1):
        host = f"127.0.0.{10 + broker_id}"
        address = f"{host}:{BROKER_PORT}"
        pid = spawn([
            sys.executable, "-m", "logstore", "serve", "--data-dir", str(directory / f"broker-{broker_id}"),
            "--listen", address, "--metrics-listen", f"{host}:{BROKER_PORT + 1}",
            "--cluster", f"etcd://{endpoints}", "--broker-id", str(broker_id), "--log-format", "text",
        ], directory / f"broker-{broker_id}.log")
        state["brokers"].append({"broker_id": broker_id, "address": address, "pid": pid})
        (directory / "cluster.json").write_text(json.dumps(state, indent=2))
    for broker in state["brokers"]:
        wait(lambda b=broker: serving(b["address"]), f"broker {broker['broker_id']}")
    bootstrap = ",".join(b["address"] for b in state["brokers"])
    print(f"cluster up in {directory}")
    print(f"  etcd:    {endpoints}")
    print(f"  brokers: {bootstrap}")
    print(f"  try:     logstore --server {bootstrap} cluster describe")
    print("  stop:    scripts/cluster down")
    return 0


def load(args: argparse.Namespace) -> dict | None:
    directory = Path(args.dir) if args.dir else (Path(POINTER.read_text().strip()) if POINTER.exists() else None)
    if directory is None or not (directory / "cluster.json").exists():
        print("cluster: no cluster found (start one with 'scripts/cluster up')", file=sys.stderr)
        return None
    return dict(json.loads((directory / "cluster.json").read_text()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def status(args: argparse.Namespace) -> int:
    state = load(args)
    if state is None:
        return 1
    print(f"cluster in {state['dir']}")
    for member in state["etcd"]:
        print(f"  etcd {member['name']:4} {member['address']:22} {'running' if alive(member['pid']) else 'stopped'}")
    for broker in state["brokers"]:
        print(f"  broker {broker['broker_id']:<2} {broker['address']:22} "
              f"{'running' if alive(broker['pid']) else 'stopped'}")
    print(f"  bootstrap: {','.join(b['address'] for b in state['brokers'])}")
    return 0


def down(args: argparse.Namespace) -> int:
    state = load(args)
    if state is None:
        return 1
    processes = [b["pid"] for b in state["brokers"]] + [m["pid"] for m in state["etcd"]]
    for group in (processes[: len(state["brokers"])], processes[len(state["brokers"]):]):
        for pid in group:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in group) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in group:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    Path(state["dir"], "cluster.json").unlink()
    if POINTER.exists() and POINTER.read_text().strip() == state["dir"]:
        POINTER.unlink()
    print(f"cluster down (data kept in {state['dir']})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start etcd members and brokers")
    start.add_argument("--brokers", type=int, default=3)
    start.add_argument("--etcd", type=int, default=3)
    start.add_argument("--dir", help="where data and logs go (created if missing; default a new temp dir)")
    for name, text in (("status", "what runs"), ("down", "stop it")):
        sub.add_parser(name, help=text).add_argument("--dir")
    args = parser.parse_args()
    if args.command == "up" and not (1 <= args.brokers <= 200 and 1 <= args.etcd <= 9):
        parser.error("--brokers must be 1..200 and --etcd 1..9")
    return {"up": up, "status": status, "down": down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
