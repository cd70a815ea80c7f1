"""Share group config: parsing, backoff by delivery count, refusals."""

from __future__ import annotations

import pytest

from logstore.broker.share import ShareGroupConfig
from logstore.errors import InvalidConfigError


def test_defaults() -> None:
    config = ShareGroupConfig()
    assert (config.lock_ms, config.max_deliveries, config.dead_letter_topic) == (30_000, 5, "")


def test_backoff_list_parses_units_and_repeats_its_last_step() -> None:
    config = ShareGroupConfig().with_changes({"backoff": "1s,5s,30s"})
    assert config.backoff_ms == (1000, 5000, 30_000)
    assert [config.backoff_for(n) for n in (1, 2, 3, 4, 9)] == [1000, 5000, 30_000, 30_000, 30_000]


def test_string_values_are_parsed() -> None:
    config = ShareGroupConfig().with_changes({"lock-ms": "2s", "max_deliveries": "3"})
    assert (config.lock_ms, config.max_deliveries) == (2000, 3)


@pytest.mark.parametrize("changes", [{"lock_ms": "0"}, {"max_deliveries": "x"}, {"colour": "red"},
                                     {"backoff": "1h"}, {"auto_offset_reset": "middle"}])
def test_bad_values_are_refused_naming_the_key(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidConfigError) as info:
        ShareGroupConfig().with_changes(changes)
    assert info.value.key in {*changes, "backoff", "lock_ms", "max_deliveries", "auto_offset_reset"}


def test_round_trip_through_the_stored_form() -> None:
    config = ShareGroupConfig().with_changes({"backoff": "1s,2s", "dead_letter_topic": "dlq"})
    assert ShareGroupConfig.from_dict(config.to_dict()) == config
