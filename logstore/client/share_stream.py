"""One ``ShareStream`` call of a ``ShareConsumer``: its fetches (acknowledgements piggybacked) as
messages of one bidirectional stream instead of one unary call each (measured: about half the
broker's CPU per fetch, see the README's queue section).

``send`` puts a request on the call's queue (gRPC's own thread writes it to the broker);
``receive`` reads the next answer in the caller's thread. The broker serves the requests of a
stream one after another and answers them in order, so requests may be sent ahead of their
answers (pipelined, the consumer's ``prefetch``): each is then already read when the previous
one is answered. ``in_flight`` keeps the requests sent and not answered, oldest first, so the
consumer can queue their acknowledgements again when the call dies. A request
that failed as a whole comes back with ``error`` set (raised here as its typed error); the
stream stays usable. When the call itself fails (broker gone: keepalive notices an idle one),
``receive`` raises the typed error and the stream is dead: the consumer opens a new one on its
next call. Requests sent and not answered are lost with the call (their acknowledgements are
queued again by the consumer; their acquisitions come back after their lock).

Thread-safety: one thread at a time (the consumer's ``poll``/``commit``/``close``).
"""

from __future__ import annotations

import itertools
import queue
from typing import Any, Protocol

from logstore.api.v1 import share_pb2
from logstore.client.channel import error_from_detail, translate_errors
from logstore.errors import UnavailableError


class InFlight(Protocol):
    in_flight: list[share_pb2.ShareFetchRequest]

    def close(self) -> None: ...


def answer_of_oldest(stream: InFlight, response: share_pb2.ShareFetchResponse,
                     name: str) -> share_pb2.ShareFetchResponse:
    """``response`` as the answer to ``stream``'s oldest request in flight (taken off it): a
    wrong ``correlation_id`` ends the stream (RuntimeError), an ``error`` is raised typed."""
    expected = stream.in_flight.pop(0).correlation_id
    if response.correlation_id != expected:
        stream.close()
        raise RuntimeError(f"{name} answered request {response.correlation_id}, expected {expected}")
    if response.HasField("error"):
        raise error_from_detail(response.error)
    return response


class ShareStream:
    def __init__(self, stub: Any, server: str) -> None:
        self._server = server
        self._requests: queue.SimpleQueue[share_pb2.ShareFetchRequest | None] = queue.SimpleQueue()
        self._call = stub.ShareStream(iter(self._requests.get, None))
        self._ids = itertools.count(1)
        #: The requests sent and not answered yet, oldest first.
        self.in_flight: list[share_pb2.ShareFetchRequest] = []
        self.broken = False

    def send(self, request: share_pb2.ShareFetchRequest) -> None:
        request.correlation_id = next(self._ids)
        self.in_flight.append(request)
        self._requests.put(request)

    def receive(self) -> share_pb2.ShareFetchResponse:
        """The answer to the oldest request in flight (its error raised). When the call fails,
        ``in_flight`` still holds every request not answered (the oldest included)."""
        try:
            with translate_errors(self._server):
                response: share_pb2.ShareFetchResponse | None = next(self._call, None)
            if response is None:
                raise UnavailableError(f"{self._server} ended the ShareStream call")
        except BaseException:
            self.close()
            raise
        return answer_of_oldest(self, response, "ShareStream")

    def close(self) -> None:
        """End the call (requests not answered are dropped)."""
        if not self.broken:
            self.broken = True
            self._requests.put(None)
            self._call.cancel()
