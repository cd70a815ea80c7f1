"""Without pyarrow (or pandas, polars), the frames methods say which extra to install.

Each case runs in a fresh interpreter whose import system refuses the package (a meta-path
finder installed before logstore is imported), as on a machine without the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.broker_fixture import ROOT

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("blocked", "call", "extra"), [
    ({"pyarrow"}, "consumer.read_arrow('t')", "arrow"),
    ({"pyarrow"}, "next(consumer.iter_arrow('t'))", "arrow"),
    ({"pandas"}, "consumer.read_pandas('t')", "pandas"),
    ({"polars"}, "consumer.read_polars('t')", "polars"),
    ({"pyarrow"}, "Producer('127.0.0.1:1').send_arrow('t', None)", "arrow"),
])
def test_a_missing_extra_is_named(blocked: set[str], call: str, extra: str) -> None:
    result = run(blocked, f"""
        from logstore.client import Consumer, Producer
        from logstore.client.frames.extras import MissingExtraError
        consumer = Consumer("127.0.0.1:1")
        try:
            {call}
        except MissingExtraError as exc:
            print("ERROR", exc)
    """)
    assert result.returncode == 0, result.stderr
    assert f"pip install 'logstore[{extra}]'" in result.stdout


def test_importing_logstore_does_not_import_pyarrow() -> None:
    result = run({"pyarrow", "pandas", "polars", "duckdb"}, """
        import logstore, logstore.client, logstore.cli.main
        logstore.cli.main.build_parser()
        print("fine")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fine"
