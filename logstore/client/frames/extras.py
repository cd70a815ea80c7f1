"""Optional dependencies, imported when first needed, with an error that names the extra.

``pip install 'logstore[arrow]'`` brings pyarrow; ``[pandas]``, ``[polars]`` and ``[duckdb]`` add
those on top, ``[frames]`` all of them. Importing ``logstore`` never imports any of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: module -> the extra that installs it.
EXTRAS = {
    "pyarrow": "arrow",
    "pandas": "pandas",
    "polars": "polars",
    "duckdb": "duckdb",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; ``extra`` is what to install."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs {module}, which is not installed: pip install 'logstore[{extra}]'",
            name=module,
        )
        self.module = module
        self.extra = extra


def require(module: str, feature: str) -> ModuleType:
    """``import module`` (e.g. "pyarrow.json"), or MissingExtraError naming its extra."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".", 1)[0] != top:
            raise  # the package is there but something it needs is broken: show that
        raise MissingExtraError(top, EXTRAS.get(top, "frames"), feature) from exc


def pyarrow(feature: str = "Arrow tables") -> ModuleType:
    return require("pyarrow", feature)
