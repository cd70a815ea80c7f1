"""``value_format``: what the ``value`` column holds. Filled in below."""

from __future__ import annotations

from typing import Any

FORMATS = ("binary",)


class Formatter:
    def __init__(self, value_format: str, schema: Any, errors: str) -> None:
        self.value_format = value_format

    def batch(self, batch: Any) -> Any:
        return batch

    def table(self, table: Any) -> Any:
        return table
