"""config.py: defaults, parsing strings and Python values, and every key's bounds."""

from __future__ import annotations

import pytest

from logstore.errors import InvalidConfigError
from logstore.storage import LogConfig


def test_defaults_are_valid_and_have_no_overrides():
    config = LogConfig()
    config.check()
    assert config.overrides() == {}
    assert config.delete and not config.compact


def test_from_dict_parses_strings_with_units():
    config = LogConfig.from_dict({"segment_bytes": "64MiB", "segment_index_bytes": "1 kib",
                                  "max_batch_bytes": "2_048", "retention_bytes": "1GiB"})
    assert config.segment_bytes == 64 << 20
    assert config.segment_index_bytes == 1024
    assert config.max_batch_bytes == 2048
    assert config.retention_bytes == 1 << 30


def test_dotted_and_dashed_keys_are_accepted():
    config = LogConfig.from_dict({"retention.ms": "5000", "cleanup-policy": "Compact, Delete"})
    assert config.retention_ms == 5000
    assert config.cleanup_policy == "compact,delete"
    assert config.compact and config.delete


def test_from_dict_applies_over_a_base():
    base = LogConfig(flush="always")
    config = LogConfig.from_dict({"retention_ms": 1000}, base=base)
    assert (config.flush, config.retention_ms) == ("always", 1000)
    assert LogConfig.from_dict(None, base=base) is base


def test_unknown_key_names_the_key():
    with pytest.raises(InvalidConfigError) as caught:
        LogConfig.from_dict({"retention.hours": 5})
    assert caught.value.key == "retention.hours"
    assert "known keys" in caught.value.message


@pytest.mark.parametrize("raw", ["ten", "1.5", "", True])
def test_a_non_integer_for_an_integer_key_is_rejected(raw):
    with pytest.raises(InvalidConfigError) as caught:
        LogConfig.from_dict({"segment_ms": raw})
    assert caught.value.key == "segment_ms"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("segment_bytes", 4095),
        ("segment_bytes", 1 << 31),
        ("segment_ms", 0),
        ("segment_index_bytes", 63),
        ("index_interval_bytes", -1),
        ("flush", "sometimes"),
        ("flush_interval_ms", 0),
        ("retention_ms", 0),
        ("retention_ms", -2),
        ("retention_bytes", -2),
        ("cleanup_policy", "shred"),
        ("delete_retention_ms", -1),
        ("max_batch_bytes", 1023),
    ],
)
def test_out_of_bounds_values_are_rejected_naming_the_key(key, value):
    with pytest.raises(InvalidConfigError) as caught:
        LogConfig.from_dict({key: value})
    assert caught.value.key == key
    assert caught.value.value == value


@pytest.mark.parametrize(
    ("key", "value"),
    [("segment_bytes", 4096), ("retention_ms", -1), ("retention_bytes", 0),
     ("index_interval_bytes", 0), ("flush", "never"), ("cleanup_policy", "compact")],
)
def test_boundary_values_are_accepted(key, value):
    assert getattr(LogConfig.from_dict({key: value}), key) == value


def test_overrides_are_the_keys_that_differ():
    config = LogConfig.from_dict({"flush": "always", "retention_ms": LogConfig().retention_ms})
    assert config.overrides() == {"flush": "always"}
    assert config.overrides(base=LogConfig(flush="always")) == {}


def test_to_dict_round_trips():
    config = LogConfig.from_dict({"flush": "never", "segment_bytes": 8192})
    assert LogConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == set(LogConfig.keys())
