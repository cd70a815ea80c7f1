"""The README's examples run as written: the quickstart commands and Python, and the embedded
storage example (against a real broker on a free port instead of the default address)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DEFAULT = "127.0.0.1:7070"


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_quickstart_commands_run(broker):
    env = dict(os.environ, LOGSTORE_SERVER=broker.address)
    shell = blocks(section("Quickstart"), "sh")[1]
    for line in shell.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command or "--follow" in command:
            continue  # --follow tails forever
        if command.startswith("printf"):
            printed, _, consumer = command.partition("|")
            data = subprocess.run(printed, shell=True, capture_output=True, check=True).stdout
            args = shlex.split(consumer.strip())
        else:
            data, args = b"", shlex.split(command)
        assert args[0] == "logstore"
        result = subprocess.run(
            [sys.executable, "-m", "logstore", *args[1:]], input=data, env=env,
            capture_output=True, timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr.decode())


def test_quickstart_python_runs_and_prints_every_record_of_every_partition(broker):
    from logstore import Producer

    subprocess.run(
        [sys.executable, "-m", "logstore", "topic", "create", "orders", "--partitions", "3",
         "--server", broker.address], check=True, capture_output=True, timeout=60,
    )
    with Producer(broker.address) as producer:  # what the quickstart's shell lines left there
        for partition in range(3):
            for number in range(50):
                producer.send("orders", f"order {partition}/{number}".encode(), partition=partition)
    code = blocks(section("Quickstart"), "python")[0].replace(DEFAULT, broker.address)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 soup" in result.stdout
    printed = [line for line in result.stdout.splitlines() if "b'order " in line]
    assert len(printed) == 150  # not only what one poll (one fetch) brought


def test_embedded_storage_example_runs(tmp_path):
    code = blocks(section("Embedded storage API"), "python")[0].replace(
        "/tmp/logstore-embedded", str(tmp_path / "embedded")
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "b'first'" in result.stdout


def test_queue_mode_example_runs(broker):
    code = blocks(section("Queue mode (share groups)"), "python")[0].replace(DEFAULT, broker.address)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert lines == ["did b'job-0' delivery 1", "did b'job-1' delivery 2", "did b'job-2' delivery 1"]
def test_streams_as_tables_example_runs(broker, tmp_path):
    text = section("Streams as tables")
    code = blocks(text, "python")[0].replace(DEFAULT, broker.address)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[('pie', 4.0), ('soup', 15.0)]" in result.stdout
    env = dict(os.environ, LOGSTORE_SERVER=broker.address)
    subprocess.run([sys.executable, "-m", "logstore", "topic", "create", "tickets-archive"],
                   env=env, check=True, capture_output=True, timeout=60)
    for line in blocks(text, "sh")[0].splitlines():
        args = shlex.split(line.split("#", 1)[0])
        if "--from" in args:  # a moment before the example ran: from the start instead
            args[args.index("--from") + 1] = "earliest"
        result = subprocess.run([sys.executable, "-m", "logstore", *args[1:]], env=env,
                                cwd=tmp_path, capture_output=True, timeout=60)
        assert result.returncode == 0, (line, result.stderr.decode())
    archived = subprocess.run(
        [sys.executable, "-m", "logstore", "consume", "tickets-archive"], env=env,
        capture_output=True, timeout=60, check=True).stdout
    assert archived.count(b'"dish"') == 3
