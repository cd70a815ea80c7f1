"""ProduceStream over a real gRPC channel to a port nothing listens on: the call fails, and a
``send`` made while ``on_failure`` is still being handed the failed call's requests waits until
it has had them all (a newer request must not reach a broker before the caller knows the older
ones failed: per-partition order)."""

from __future__ import annotations

import threading
from typing import Any

import grpc

from logstore.client.stream import ProduceStream
from tests.broker_fixture import free_port


def test_a_send_waits_until_the_failed_requests_were_handed_back() -> None:
    entered, release = threading.Event(), threading.Event()
    failed: list[Any] = []

    def on_failure(context: Any, error: Any) -> None:
        failed.append(context)
        if context == "older":
            entered.set()
            release.wait(10)

    with grpc.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        stream = ProduceStream(
            channel.stream_stream("/logstore.v1.LogStore/ProduceStream", request_serializer=None),
            server="nowhere", max_in_flight=5, retries=0, retry_backoff_ms=1,
            retry_backoff_max_ms=1, on_response=lambda *_: None, on_failure=on_failure)
        stream.send(stream.next_id(), b"", "older")
        assert entered.wait(10)
        newer = threading.Thread(target=stream.send, args=(stream.next_id(), b"", "newer"))
        newer.start()
        newer.join(0.3)
        assert newer.is_alive()  # held back while "older" is being handed back
        release.set()
        newer.join(10)
        assert not newer.is_alive()
        stream.close(5)
    assert failed == ["older", "newer"]
