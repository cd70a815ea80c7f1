"""A benchmark client process: ``python -m bench.peers.agent`` (started by ``pool.Pool``).

Each system's client runs in its own process, so that a producer and a consumer of one system, or
four producers, never share a GIL, and the harness's own work (progress bar, admin calls) never
steals from a client. An agent serves one measurement after another:

1. it reads ``{"spec": {...}}`` from stdin: a ``system`` (logstore, redis, nats, ceiling, cluster), a
   ``role`` (produce, consume, ...) and its parameters;
2. the role sets up (connects, builds its records) and calls ``barrier()``, which writes
   ``{"ready": true}`` and blocks until the harness answers ``{"go": true}`` (``{"go": false}``
   aborts); every process of a measurement starts together;
3. the role times its work itself (``clock.Timer``) and returns a dict, written as
   ``{"result": {...}}``; an exception is written as ``{"error": "<traceback>"}``.

Protocol lines start with ``@@ `` on the process's original stdout; anything a library prints
goes to stderr (the harness keeps it in a log). ``{"quit": true}`` or EOF ends the agent.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

PREFIX = "@@ "
RUNNERS = {
    "logstore": "bench.peers.logstore_runner",
    "redis": "bench.peers.redis_runner",
    "nats": "bench.peers.nats_runner",
    "ceiling": "bench.peers.grpc_ceiling",
    "cluster": "bench.cluster.roles",  # the cluster suite's producer (bench/cluster/)
}

Role = Callable[[dict[str, Any], Callable[[], None]], dict[str, Any]]


class Aborted(Exception):
    """The harness gave up on this measurement before it started."""


class Channel:
    def __init__(self, commands: IO[str], replies: IO[str]) -> None:
        self.commands = commands
        self.replies = replies

    def send(self, message: dict[str, Any]) -> None:
        self.replies.write(PREFIX + json.dumps(message) + "\n")
        self.replies.flush()

    def receive(self) -> dict[str, Any] | None:
        line = self.commands.readline()
        return json.loads(line) if line.strip() else None


def role_of(spec: dict[str, Any]) -> Role:
    module = importlib.import_module(RUNNERS[spec["system"]])
    role: Role = module.ROLES[spec["role"]]
    return role


def serve(channel: Channel) -> None:
    while True:
        message = channel.receive()
        if message is None or message.get("quit"):
            return
        spec = message["spec"]

        def barrier() -> None:
            channel.send({"ready": True})
            answer = channel.receive()
            if not answer or not answer.get("go"):
                raise Aborted("the harness aborted the measurement")

        try:
            result = role_of(spec)(spec, barrier)
            result["pid"] = os.getpid()
            channel.send({"result": result})
        except Aborted:
            channel.send({"aborted": True})
        except Exception:  # noqa: BLE001 - reported to the harness, which raises it
            channel.send({"error": traceback.format_exc()})


def main() -> int:
    # The protocol keeps the original stdout; print() and libraries write to stderr instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(Channel(sys.stdin, replies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
