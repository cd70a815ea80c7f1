"""The harness's side of the client processes: a pool of ``agent`` processes and one barrier.

``Pool.run(specs, timeout)`` hands one spec to each of ``len(specs)`` agents, waits until every
one has set up and is ready, calls ``before_go`` (the harness reads the servers' CPU counters
there), tells them all to go, and returns their results in order. Agents are reused from one
measurement to the next, so a quick run does not pay a Python start-up per measurement. An agent
that fails, times out or dies is killed and replaced, together with the rest of that measurement's
agents; ``close()`` stops them all. Agents run in their own session, so a Ctrl-C in the terminal
reaches only the harness, which then stops them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.peers.agent import PREFIX


class MeasurementError(RuntimeError):
    """A client process failed, timed out or died; the message says which and why."""


class Agent:
    def __init__(self, index: int, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.index = index
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.peers.agent"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=cwd, env=dict(env), start_new_session=True,
            )
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise MeasurementError(f"client process {self.index} is gone{self.log_tail()}") from exc

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next protocol message; MeasurementError after ``deadline`` (monotonic)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                text = line.decode("utf-8", "replace")
                if text.startswith(PREFIX):
                    return dict(json.loads(text[len(PREFIX) :]))
                continue
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise MeasurementError(f"client process {self.index} timed out{self.log_tail()}")
            readable, _, _ = select.select([fd], [], [], min(wait, 1.0))
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self.process.wait(5)
                    raise MeasurementError(
                        f"client process {self.index} exited with {code}{self.log_tail()}")
                self._buffer += chunk

    def log_tail(self, limit: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""
        return f"; its log ({self.log_path}) ends:\n{text}" if text.strip() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"quit": True})
                self.process.wait(3)
            except (MeasurementError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class Pool:
    def __init__(self, env: Mapping[str, str], work_dir: Path, size: int) -> None:
        self.env = env
        self.work_dir = work_dir
        self._agents: list[Agent] = []
        self._started = 0
        self._ensure(size)

    @property
    def agents(self) -> list[Agent]:
        """The running agents; measurement ``specs[i]`` runs in ``agents[i]``."""
        return list(self._agents)

    def _spawn(self) -> Agent:
        self._started += 1
        index = self._started
        return Agent(index, self.env, self.work_dir, self.work_dir / f"client-{index}.log")

    def _ensure(self, count: int) -> None:
        while len(self._agents) < count:
            self._agents.append(self._spawn())

    def run(
        self,
        specs: Sequence[dict[str, Any]],
        timeout: float,
        before_go: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run one measurement: ``specs[i]`` in agent ``i``, started together."""
        self._ensure(len(specs))
        agents = self._agents[: len(specs)]
        deadline = time.monotonic() + timeout
        try:
            for agent, spec in zip(agents, specs, strict=True):
                agent.send({"spec": spec})
            for agent, spec in zip(agents, specs, strict=True):
                self._expect(agent, agent.receive(deadline), "ready", spec)
            if before_go is not None:
                before_go()
            for agent in agents:
                agent.send({"go": True})
            return [self._expect(agent, agent.receive(deadline), "result", spec)
                    for agent, spec in zip(agents, specs, strict=True)]
        except BaseException:
            self._replace(agents)
            raise

    @staticmethod
    def _expect(agent: Agent, message: dict[str, Any], key: str, spec: dict[str, Any]) -> Any:
        if key in message:
            return message[key]
        what = f"{spec.get('system')}.{spec.get('role')}"
        if "error" in message:
            raise MeasurementError(f"{what} failed in client process {agent.index}:\n"
                                   f"{message['error']}")
        raise MeasurementError(f"{what}: unexpected answer {message!r} from client process "
                               f"{agent.index}")

    def _replace(self, agents: Sequence[Agent]) -> None:
        for agent in agents:
            agent.kill()
        self._agents = [a for a in self._agents if a not in agents]

    def close(self) -> None:
        agents, self._agents = self._agents, []
        for agent in agents:
            agent.stop()
