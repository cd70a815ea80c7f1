"""Error translation at the gRPC edge (the end-to-end cases are in test_errors.py)."""

from __future__ import annotations

from logstore.api.v1 import common_pb2
from logstore.client.channel import error_from_detail, is_transient, make_error
from logstore.errors import OffsetOutOfRangeError, UnavailableError, UnknownTopicError


def test_a_detail_becomes_its_typed_error_with_fields() -> None:
    detail = common_pb2.ErrorDetail(
        code=11, reason="OFFSET_OUT_OF_RANGE", message="offset 9 is out of range",
        metadata={"topic": "t", "partition": "0", "offset": "9", "log_start_offset": "0",
                  "log_end_offset": "5"},
    )
    error = error_from_detail(detail)
    assert isinstance(error, OffsetOutOfRangeError)
    assert (error.offset, error.log_end_offset, error.topic) == (9, 5, "t")
    assert error.message == "offset 9 is out of range"


def test_an_unknown_reason_keeps_its_name() -> None:
    error = make_error("SOMETHING_NEW", "from a newer broker", {})
    assert error.reason == "SOMETHING_NEW"
    assert error.message == "from a newer broker"


def test_known_reasons_map_to_their_classes() -> None:
    assert isinstance(make_error("UNKNOWN_TOPIC", "no", {"topic": "t"}), UnknownTopicError)


def test_unavailable_and_shutting_down_are_transient() -> None:
    assert is_transient(UnavailableError("down"))
    assert is_transient(make_error("SHUTTING_DOWN", "bye", {}))
    assert not is_transient(make_error("UNKNOWN_TOPIC", "no", {"topic": "t"}))
