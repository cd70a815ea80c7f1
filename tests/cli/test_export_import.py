"""``logstore export`` and ``logstore import``: a range to a file and back, byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from logstore.client import Producer
from tests.cli.conftest import Run


def create(cli: Callable[..., Run], name: str, partitions: int = 2) -> str:
    assert cli("topic", "create", name, "--partitions", str(partitions)).code == 0
    return name


def fill(server: str, topic: str, text: bool) -> None:
    count = 400
    values = [None if i % 9 == 0 else (b"value-%d" % i if text else bytes([i % 256]) * (i % 5))
              for i in range(count)]
    with Producer(server) as producer:
        producer.send_batch(
            topic, values, keys=[None if i % 4 == 0 else b"key-%d" % i for i in range(count)],
            headers=[[("h", b"x"), ("h", None), ("e", b"")] if i % 6 == 0 else None
                     for i in range(count)],
            timestamps=1_700_000_000_000 + np.arange(count) * 7,
        ).result(20)


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".csv", ".jsonl"])
def test_export_then_import_then_export_is_byte_identical(
    cli: Callable[..., Run], server: str, topic_name: str, tmp_path: Path, suffix: str
) -> None:
    source = create(cli, topic_name)
    fill(server, source, text=suffix in (".csv", ".jsonl"))
    first, second = tmp_path / f"first{suffix}", tmp_path / f"second{suffix}"
    assert cli("export", source, "--output", str(first)).code == 0
    copy = create(cli, topic_name + "-copy")
    run = cli("import", copy, str(first))
    assert run.code == 0, run.stderr
    assert cli("export", copy, "--output", str(second)).code == 0
    assert first.read_bytes() == second.read_bytes()
    if suffix == ".parquet":
        assert pq.read_table(first).num_rows == 400


def test_export_a_range_of_columns(cli: Callable[..., Run], server: str, topic_name: str,
                                   tmp_path: Path) -> None:
    topic = create(cli, topic_name, partitions=1)
    fill(server, topic, text=True)
    out = tmp_path / "part.parquet"
    run = cli("export", topic, "--from", "10", "--to", "@1700000000140", "--columns",
              "offset,value", "--output", str(out))
    assert run.code == 0, run.stderr
    table = pq.read_table(out)
    assert table.column_names == ["offset", "value"]
    assert table.column("offset").to_pylist() == list(range(10, 20))


def test_binary_values_cannot_go_to_csv_and_unknown_suffixes_fail(
    cli: Callable[..., Run], server: str, topic_name: str, tmp_path: Path
) -> None:
    topic = create(cli, topic_name, partitions=1)
    with Producer(server) as producer:
        producer.send_batch(topic, [b"\xff\x00"], partition=0).result(20)
    run = cli("export", topic, "--output", str(tmp_path / "x.csv"))
    assert run.code == 1 and "is not UTF-8, which CSV and JSONL cannot hold" in run.stderr
    run = cli("export", topic, "--output", str(tmp_path / "x.xlsx"))
    assert run.code == 1 and "unknown file type .xlsx" in run.stderr
    run = cli("import", topic, str(tmp_path / "x.txt"))
    assert run.code == 1 and "unknown file type .txt" in run.stderr
