"""``value_format`` "json", "utf8" and "arrow" against a real broker, and their errors."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pyarrow as pa
import pytest

from logstore.client import Consumer, Producer
from logstore.client.frames.values import ValueFormatError

Topic = Callable[..., str]


def documents(count: int, seed: int = 3) -> list[bytes | None]:
    rng = random.Random(seed)
    out: list[bytes | None] = []
    for i in range(count):
        if i % 17 == 0:
            out.append(None)
            continue
        document = {"id": i, "price": round(rng.uniform(0, 100), 2), "name": f"item \"{i}\"\n",
                    "paid": i % 2 == 0, "customer": {"id": rng.randrange(50), "tags": ["a", "b"][: i % 3]}}
        out.append(json.dumps(document).encode())
    return out


def send(server: str, topic: str, values: list[bytes | None], partition: int = 0) -> None:
    with Producer(server) as producer:
        producer.send_batch(topic, values, partition=partition).result(20)


def test_json_values_become_typed_columns_equal_to_json_loads(server: str, new_topic: Topic) -> None:
    topic = new_topic(2)
    values = documents(3000)
    send(server, topic, values[:1500], 0)
    send(server, topic, values[1500:], 1)
    with Consumer(server) as consumer:
        table = consumer.read_arrow(topic, value_format="json")
    kind = table.schema.field("value").type
    assert kind.field("id").type == pa.int64() and kind.field("price").type == pa.float64()
    assert kind.field("customer").type.field("tags").type == pa.list_(pa.string())
    assert table.column("value").to_pylist() == [None if v is None else json.loads(v)
                                                 for v in values]


def test_a_json_schema_fixes_the_fields(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    send(server, topic, documents(100))
    schema = pa.schema([("id", pa.int32()), ("name", pa.string())])
    with Consumer(server) as consumer:
        table = consumer.read_arrow(topic, value_format="json", schema=schema)
    assert table.schema.field("value").type == pa.struct(list(schema))
    assert table.column("value")[1].as_py() == {"id": 1, "name": 'item "1"\n'}


def test_iter_arrow_keeps_the_schema_of_its_first_batch(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    send(server, topic, [b'{"a": %d}' % i for i in range(400)])
    send(server, topic, [b'{"a": %d, "b": "new"}' % i for i in range(400)])
    with Consumer(server) as consumer:
        batches = list(consumer.iter_arrow(topic, value_format="json"))
    assert len(batches) == 2
    assert all(batch.schema.field("value").type == pa.struct([("a", pa.int64())]) for batch in batches)


def test_a_value_that_is_not_json_is_named_by_partition_and_offset(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(1)
    send(server, topic, [b'{"a": 1}', b'{"a": 2}', b"{oops", b"", b"[1, 2]", b'{"a": 6}'])
    with Consumer(server) as consumer:
        with pytest.raises(ValueFormatError, match="value at 0/2: not JSON") as caught:
            consumer.read_arrow(topic, value_format="json")
        assert (caught.value.partition, caught.value.offset) == (0, 2)
        table = consumer.read_arrow(topic, value_format="json", errors="null")
    assert table.column("value").to_pylist() == [{"a": 1}, {"a": 2}, None, None, None, {"a": 6}]
    errors = table.column("value_error").to_pylist()
    assert errors[0] is None and errors[5] is None
    assert errors[2].startswith("not JSON") and errors[3] == "an empty value is not JSON"
    assert errors[4] == "a JSON list, not an object"


def test_utf8_values_become_strings_and_bad_bytes_are_named(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    send(server, topic, ["héllo".encode(), None, b"\xff\xfe", b"ok"])
    with Consumer(server) as consumer:
        with pytest.raises(ValueFormatError, match="value at 0/2: not UTF-8"):
            consumer.read_arrow(topic, value_format="utf8")
        table = consumer.read_arrow(topic, value_format="utf8", errors="null", columns=["value"])
    assert table.column_names == ["value", "value_error"]
    assert table.column("value").to_pylist() == ["héllo", None, None, "ok"]
    assert table.column("value_error").to_pylist()[:2] == [None, None]


def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_arrow_values_expand_into_their_rows(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    first = pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    second = pa.table({"x": [4], "y": ["d"]})
    send(server, topic, [ipc(first), None, ipc(second), b"not arrow"])
    with Consumer(server) as consumer:
        with pytest.raises(ValueFormatError, match="value at 0/3: not an Arrow IPC stream"):
            consumer.read_arrow(topic, value_format="arrow")
        table = consumer.read_arrow(topic, value_format="arrow", errors="null",
                                    columns=["offset", "value"])
    assert table.column("offset").to_pylist() == [0, 0, 0, 1, 2, 3]
    assert table.column("value").to_pylist() == [
        {"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}, None, {"x": 4, "y": "d"}, None]
    assert table.column("value_error").null_count == 5


def test_unknown_formats_and_error_modes_are_refused(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    with Consumer(server) as consumer:
        with pytest.raises(ValueError, match="value_format must be one of"):
            consumer.read_arrow(topic, value_format="xml")
        with pytest.raises(ValueError, match="errors must be one of"):
            consumer.read_arrow(topic, value_format="json", errors="skip")


def test_json_inferred_per_message_is_unified_over_the_range(server: str, new_topic: Topic) -> None:
    topic = new_topic(1)
    send(server, topic, [b'{"a": %d}' % i for i in range(50)])
    send(server, topic, [b'{"a": 1.5, "b": {"c": "x"}}'] * 50)
    send(server, topic, [b'{"t": "2020-01-01"}'] * 10)
    with Consumer(server, max_partition_fetch_bytes=1) as consumer:  # one log batch a message
        table = consumer.read_arrow(topic, value_format="json", end=100)
        both = consumer.read_arrow(topic, value_format="json", start=100)
    kind = table.schema.field("value").type
    assert kind == pa.struct([("a", pa.float64()), ("b", pa.struct([("c", pa.string())]))])
    assert table.column("value").to_pylist() == (
        [{"a": float(i), "b": None} for i in range(50)] + [{"a": 1.5, "b": {"c": "x"}}] * 50)
    assert both.schema.field("value").type.field("t").type == pa.timestamp("s")


def test_json_types_that_do_not_unify_are_inferred_again_over_the_whole_range(
    server: str, new_topic: Topic
) -> None:
    topic = new_topic(1)
    send(server, topic, [b'{"t": "2020-01-01"}'] * 10)
    send(server, topic, [b'{"t": "not a time"}'] * 10)
    with Consumer(server, max_partition_fetch_bytes=1) as consumer:
        table = consumer.read_arrow(topic, value_format="json")
    assert table.schema.field("value").type == pa.struct([("t", pa.string())])
    assert table.column("value").to_pylist() == [{"t": "2020-01-01"}] * 10 + [{"t": "not a time"}] * 10


def test_a_raw_line_break_inside_a_json_value_reads_as_a_space() -> None:
    from logstore.client.frames.values import Formatter

    values = [b'{"a":\n1}', b'{"b":\r\n\t"xy"}', None, b'{"a": 2}']
    table = pa.table({"partition": pa.array([0] * 4, pa.int32()), "offset": pa.array(range(4)),
                      "value": pa.array(values, pa.binary())})
    parsed = Formatter("json", None, "raise").table(table)
    assert parsed.column("value").to_pylist() == [
        {"a": 1, "b": None}, {"a": None, "b": "xy"}, None, {"a": 2, "b": None}]


def test_json_pieces_parsed_with_the_previous_pieces_types_still_infer_what_differs() -> None:
    from logstore.client.frames.values import Formatter

    def piece(values: list[bytes]) -> pa.Table:
        return pa.table({"partition": pa.array([0] * len(values), pa.int32()),
                         "offset": pa.array(range(len(values))),
                         "value": pa.array(values, pa.binary())})

    formatter = Formatter("json", None, "raise")
    raws = [piece([b'{"a": 1, "n": null}']), piece([b'{"a": 2.5, "n": "x", "c": {"d": 1}}']),
            piece([b'{"a": 3, "c": {"d": 2, "e": true}}'])]
    table = formatter.join(raws, [formatter.piece(raw) for raw in raws], raws[0].schema)
    kind = table.schema.field("value").type
    assert kind.field("a").type == pa.float64() and kind.field("n").type == pa.string()
    assert table.column("value").to_pylist() == [
        {"a": 1.0, "n": None, "c": None}, {"a": 2.5, "n": "x", "c": {"d": 1, "e": None}},
        {"a": 3.0, "n": None, "c": {"d": 2, "e": True}}]


def _json_piece(partition: int, first: int, values: list[bytes]) -> pa.Table:
    return pa.table({"partition": pa.array([partition] * len(values), pa.int32()),
                     "offset": pa.array(range(first, first + len(values))),
                     "value": pa.array(values, pa.binary())})


def test_json_pieces_parse_on_their_own_threads_and_join_raises_the_first_bad_one_in_order() -> None:
    from concurrent.futures import Future

    from logstore.client.frames.values import Formatter

    raws = [_json_piece(0, 0, [b'{"a": 1}']), _json_piece(1, 4, [b'{"a": 2}', b"nope"]),
            _json_piece(2, 0, [b"[1]"])]
    formatter = Formatter("json", None, "raise")
    pieces: list[object] = []
    with pytest.raises(ValueFormatError) as failure:
        for raw in raws:  # piece() itself raises once the bad message before it has parsed
            pieces.append(formatter.piece(raw))
        formatter.join(raws, pieces, raws[0].schema)
    assert pieces and all(isinstance(parsing, Future) for parsing in pieces)
    assert (failure.value.partition, failure.value.offset) == (1, 5)
    good = raws[:1] + [_json_piece(1, 4, [b'{"a": 2.5}'])]
    table = formatter.join(good, [formatter.piece(raw) for raw in good], good[0].schema)
    assert table.column("value").to_pylist() == [{"a": 1.0}, {"a": 2.5}]


def test_a_bad_json_piece_raises_at_the_next_piece_once_parsed() -> None:
    from concurrent.futures import wait

    from logstore.client.frames.values import Formatter

    formatter = Formatter("json", None, "raise")
    wait([formatter.piece(_json_piece(3, 7, [b'{"a": ']))])
    with pytest.raises(ValueFormatError) as failure:
        formatter.piece(_json_piece(3, 8, [b'{"a": 1}']))
    assert (failure.value.partition, failure.value.offset) == (3, 7)


def test_no_json_parse_threads_parses_each_piece_in_the_callers_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from logstore.client.frames import values

    monkeypatch.setattr(values, "JSON_PARSE_THREADS", 0)
    formatter = values.Formatter("json", None, "raise")
    raws = [_json_piece(0, 0, [b'{"a": 1}']), _json_piece(0, 1, [b'{"a": 2.5, "b": "x"}'])]
    pieces = [formatter.piece(raw) for raw in raws]
    assert all(isinstance(piece, pa.Table) for piece in pieces)
    assert formatter.join(raws, pieces, raws[0].schema).column("value").to_pylist() == [
        {"a": 1.0, "b": None}, {"a": 2.5, "b": "x"}]


def test_json_types_hinted_by_the_first_values_still_widen_with_the_values_after() -> None:
    from logstore.client.frames.values import HINT_SAMPLE_VALUES, Formatter

    values = [b'{"a": 1, "n": null}'] * HINT_SAMPLE_VALUES + [b'{"a": 2.5, "n": "x"}']
    raws = [_json_piece(0, 0, values), _json_piece(0, len(values), [b'{"a": 3, "n": "y"}'])]
    formatter = Formatter("json", None, "raise")
    table = formatter.join(raws, [formatter.piece(raw) for raw in raws], raws[0].schema)
    kind = table.schema.field("value").type
    assert (kind.field("a").type, kind.field("n").type) == (pa.float64(), pa.string())
    assert table.column("value").to_pylist()[-3:] == [
        {"a": 1.0, "n": None}, {"a": 2.5, "n": "x"}, {"a": 3.0, "n": "y"}]
