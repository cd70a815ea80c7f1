"""Every command answers --help (exit 0, usage on stdout)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.cli.conftest import Run

COMMANDS = [
    [],
    ["topic"],
    ["topic", "create"],
    ["topic", "list"],
    ["topic", "describe"],
    ["topic", "delete"],
    ["produce"],
    ["consume"],
    ["group"],
    ["group", "list"],
    ["group", "describe"],
    ["group", "reset-offsets"],
    ["group", "delete"],
    ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "logstore")
def test_help(cli: Callable[..., Run], command: list[str]) -> None:
    run = cli(*command, "--help")
    assert run.code == 0
    assert b"usage: logstore" in run.stdout


def test_client_commands_document_server_and_its_default(cli: Callable[..., Run]) -> None:
    for command in (["topic", "list"], ["produce"], ["consume"], ["group", "describe"]):
        text = cli(*command, "--help").stdout.decode()
        assert "--server HOST:PORT" in text
        assert "LOGSTORE_SERVER" in text and "127.0.0.1:7070" in text


def test_the_entry_point_runs(logstore_process: Callable[..., Run]) -> None:
    run = logstore_process("--help")
    assert run.code == 0 and b"topic" in run.stdout and b"consume" in run.stdout


def test_no_command_is_an_argument_error(cli: Callable[..., Run]) -> None:
    run = cli()
    assert run.code == 2
    assert "usage" in run.stderr
