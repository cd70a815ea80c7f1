"""The console's settings: ``console`` and ``console_writes`` in the TOML file and as flags."""

from __future__ import annotations

import pytest

from logstore.errors import InvalidConfigError
from logstore.server.config import ServerConfig


def test_the_console_is_on_and_read_only_by_default():
    config = ServerConfig.load()
    assert config.console is True and config.console_writes is False


def test_the_toml_file_turns_the_console_off(tmp_path):
    path = tmp_path / "logstore.toml"
    path.write_text("console = false\nconsole_writes = true\n")
    config = ServerConfig.load(path)
    assert config.console is False and config.console_writes is True


def test_a_console_setting_must_be_a_boolean(tmp_path):
    path = tmp_path / "logstore.toml"
    path.write_text('console = "no"\n')
    with pytest.raises(InvalidConfigError, match="console must be true or false"):
        ServerConfig.load(path)


def test_no_console_on_the_command_line_wins_over_the_file(tmp_path):
    path = tmp_path / "logstore.toml"
    path.write_text("console = true\n")
    assert ServerConfig.load(path, console=False).console is False
