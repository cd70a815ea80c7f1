"""The etcd client's pure parts, without etcd: endpoints, prefix ranges, transaction builders."""

from __future__ import annotations

import pytest

from logstore.cluster.etcd import Compare, Op, prefix_end
from logstore.cluster.etcd.channels import parse_endpoints


def test_parse_endpoints_accepts_a_comma_list_a_scheme_and_a_sequence() -> None:
    assert parse_endpoints("etcd://h1:2379, h2:2380,") == ("h1:2379", "h2:2380")
    assert parse_endpoints(["http://127.0.0.1:1/"]) == ("127.0.0.1:1",)


@pytest.mark.parametrize("endpoints", ["", " , ", "h1", "h1:port", ":2379"])
def test_parse_endpoints_refuses_what_is_not_host_port(endpoints: str) -> None:
    with pytest.raises(ValueError, match="etcd endpoint|no etcd endpoint"):
        parse_endpoints(endpoints)


def test_prefix_end_is_the_next_prefix_and_carries_over_0xff() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_compare_builds_from_comparison_operators() -> None:
    assert (Compare.create_revision("/k") == 0) == Compare(b"/k", "create_revision", "==", 0)
    assert (Compare.mod_revision(b"/k") < 5).result == "<"
    assert (Compare.version("/k") > 1).result == ">"
    assert (Compare.value("/k") != "x") == Compare(b"/k", "value", "!=", b"x")


def test_compare_refuses_an_operand_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="needs an int"):
        _ = Compare.create_revision("/k") == b"1"
    with pytest.raises(TypeError, match="needs bytes or str"):
        _ = Compare.value("/k") == 1


def test_op_prefix_ranges_cover_the_prefix() -> None:
    assert Op.get("/p/", prefix=True).range_end == b"/p0"
    assert Op.delete("/p/k").range_end == b""
    assert Op.put("/k", "v", 7) == Op("put", b"/k", b"v", 7)
