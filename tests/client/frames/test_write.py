"""``Producer.send_arrow``: rows of Arrow, pandas and polars frames as records."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from logstore.client import Consumer, Producer
from tests.client.frames.helpers import polled

Topic = Callable[..., str]


def test_rows_become_json_objects_equal_to_the_rows(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    table = pa.table({
        "id": pa.array(range(1000), pa.int64()),
        "name": [f'n "{i}"\\\t\n' if i % 4 else None for i in range(1000)],
        "price": [i / 8 if i % 9 else float("nan") for i in range(1000)],
        "paid": [i % 2 == 0 for i in range(1000)],
    })
    with Producer(server) as producer:
        producer.send_arrow(topic, table, partition=0).result(20)
    values = [json.loads(row[4]) for row in polled(server, topic)]
    expected = [dict(row, price=None if row["price"] != row["price"] else row["price"])
                for row in table.to_pylist()]
    assert values == expected


def test_a_binary_value_column_and_a_key_column_go_as_they_are(server: str,
                                                               new_topic: Topic) -> None:
    topic = new_topic(3)
    keys = [b"user-%d" % (i % 10) for i in range(300)]
    values = [None if i % 13 == 0 else b"payload-%d" % i for i in range(300)]
    stamps = 1_700_000_000_000 + np.arange(300)
    table = pa.table({"k": keys, "v": pa.array(values, pa.binary()),
                      "at": pa.array(stamps).cast(pa.timestamp("ms", tz="UTC"))})
    with Producer(server) as producer:
        producer.send_arrow(topic, table, value="v", key="k", timestamp="at").result(20)
    reference = new_topic(3)
    with Producer(server) as producer:
        producer.send_batch(reference, values, keys=keys, timestamps=stamps).result(20)
    assert polled(server, topic) == polled(server, reference)  # same partitions by key, too


def test_pandas_and_polars_frames_and_a_partition_column(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    with Producer(server) as producer:
        producer.send_arrow(topic, pd.DataFrame({"v": ["a", "b", "c"], "p": [1, 0, 1]}),
                            value="v", partition="p").result(20)
        metadata = producer.send_arrow(topic, pl.DataFrame({"city": ["Oslo"], "n": [3]}),
                                       partition=0).result(20)
    assert [m.partition for m in metadata] == [0]
    rows = [(row[0], row[1], row[4]) for row in polled(server, topic)]
    assert rows == [(0, 0, b"b"), (0, 1, b'{"city":"Oslo","n":3}'), (1, 0, b"a"), (1, 1, b"c")]


def test_nested_columns_are_encoded_by_polars(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    table = pa.table({"order": [{"id": 1, "items": [1, 2]}, {"id": 2, "items": []}]})
    with Producer(server) as producer:
        producer.send_arrow(topic, table, partition=0).result(20)
    with Consumer(server) as consumer:
        read = consumer.read_arrow(topic, value_format="json")
    assert read.column("value").to_pylist() == table.to_pylist()


def test_what_cannot_be_sent_is_refused_before_anything_is(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Producer(server) as producer:
        with pytest.raises(TypeError, match="is binary, which is not JSON"):
            producer.send_arrow(topic, pa.table({"b": [b"\x00"]}))
        with pytest.raises(ValueError, match="value column 'nope' is not in the table"):
            producer.send_arrow(topic, pa.table({"b": [b"\x00"]}), value="nope")
        with pytest.raises(TypeError, match="send_arrow takes a pyarrow Table"):
            producer.send_arrow(topic, [{"a": 1}])
        with pytest.raises(ValueError, match="timestamp column has nulls"):
            producer.send_arrow(topic, pa.table({"v": [b"x"], "t": pa.array([None], pa.int64())}),
                                value="v", timestamp="t")
    assert polled(server, topic) == []


def test_a_timestamp_column_of_ms_integers(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    moment = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    millis = int(moment.timestamp() * 1000)
    with Producer(server) as producer:
        producer.send_arrow(topic, pa.table({"v": [b"x", b"y"], "t": [millis, millis + 1]}),
                            value="v", timestamp="t", partition=0).result(20)
    assert [row[2] for row in polled(server, topic)] == [millis, millis + 1]
