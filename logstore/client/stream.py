"""One bidirectional ``ProduceStream`` call with several requests in flight, reopened on UNAVAILABLE.

``send`` (from the producer's sender thread) waits for one of ``max_in_flight`` slots, records the
request as pending and puts its bytes on the call's request queue; gRPC's own thread feeds the queue
to the broker. A reader thread takes responses as they come (the broker answers in request order,
echoing ``correlation_id``) and hands each to ``on_response`` with the pending request's context.

When the call fails with UNAVAILABLE (broker down or restarting) the reader waits an exponential
backoff, opens a new call and re-sends every pending request in their original order, so
per-partition order survives a reconnect; a request whose answer was lost may be appended twice
(at-least-once, as with Kafka's non-idempotent producer). After ``retries`` failed attempts in a
row, or on any other error, every pending request fails with the typed error and the next ``send``
opens a fresh call — once ``on_failure`` has had every failed request (a ``send`` meanwhile waits),
so that a caller keeping per-partition order learns of the failed ones before a newer request
can reach the broker.

Thread-safety: ``_lock`` guards ``_pending``, ``_queue`` and ``_call``; callbacks run unlocked in
the reader thread.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from logstore.client.channel import error_from_rpc, is_transient
from logstore.client.config import backoff_seconds
from logstore.errors import LogstoreError, UnavailableError

log = logging.getLogger("logstore.client")

#: A produce stream that stayed up this long starts its next outage with a fresh retry budget.
STABLE_STREAM_S = 5.0

#: on_response(context, response) and on_failure(context, error), run in the reader thread.
OnResponse = Callable[[Any, Any], None]
OnFailure = Callable[[Any, LogstoreError], None]


class _Pending:
    __slots__ = ("payload", "context")

    def __init__(self, payload: bytes, context: Any) -> None:
        self.payload = payload
        self.context = context


class ProduceStream:
    def __init__(
        self,
        method: grpc.StreamStreamMultiCallable,
        *,
        server: str,
        max_in_flight: int,
        retries: int,
        retry_backoff_ms: float,
        retry_backoff_max_ms: float,
        on_response: OnResponse,
        on_failure: OnFailure,
    ) -> None:
        self._method = method
        self._server = server
        self._retries = retries
        self._backoff = (retry_backoff_ms, retry_backoff_max_ms)
        self._on_response = on_response
        self._on_failure = on_failure
        self._slots = threading.Semaphore(max_in_flight)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._queue: queue.SimpleQueue[bytes | None] | None = None
        self._call: Any = None
        self._reader: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._idle = threading.Condition(self._lock)
        #: The reader is handing a failed call's pending requests to ``on_failure``.
        self._failing = False

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, correlation_id: int, payload: bytes, context: Any) -> None:
        """Send a serialized ``ProduceRequest``; blocks while ``max_in_flight`` are unanswered."""
        self._slots.acquire()
        with self._lock:
            # a failed call's requests are handed back first: a newer request must not reach
            # the broker (on a new call) before the caller knows the older ones did not
            self._idle.wait_for(lambda: not self._failing)
            if self._closing.is_set():
                self._slots.release()
                raise UnavailableError("the producer is closed")
            self._pending[correlation_id] = _Pending(payload, context)
            if self._call is None:
                self._open()
            assert self._queue is not None
            self._queue.put(payload)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every sent request is answered or failed."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self, timeout: float | None = None) -> None:
        """End the stream once every pending request is answered (or ``timeout`` passes)."""
        self.wait_idle(timeout)
        with self._lock:
            self._closing.set()
            call, reader = self._call, self._reader
            if self._queue is not None:
                self._queue.put(None)  # ends the request iterator: the broker closes the call
        if reader is not None:
            reader.join(timeout if timeout is not None else 5.0)
            if reader.is_alive() and call is not None:
                call.cancel()
                reader.join(1.0)
        self._fail_pending(UnavailableError("the producer closed before the broker answered"))

    # -- the reader thread ---------------------------------------------------------------------

    def _open(self) -> None:
        """Start a call, and a reader if none is running (under the lock)."""
        self._queue = queue.SimpleQueue()
        self._call = self._method(iter(self._queue.get, None))
        if self._reader is None:
            self._reader = threading.Thread(
                target=self._read, name="logstore-produce-reader", daemon=True
            )
            self._reader.start()

    def _read(self) -> None:
        attempts = 0
        opened_at = time.monotonic()
        while True:
            with self._lock:
                call = self._call
            error: LogstoreError | None = None
            try:
                for response in call:
                    attempts = 0
                    self._answer(response)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, self._server)
                if self._closing.is_set() and exc.code() == grpc.StatusCode.CANCELLED:
                    self._stop(error)
                    return
            except LogstoreError as exc:  # a data channel's call (``produce_channel``)
                error = exc
                if self._closing.is_set():
                    self._stop(error)
                    return
            if error is None:  # the broker ended the stream
                with self._lock:
                    if not self._pending:
                        self._stop_locked()
                        return
                error = UnavailableError("the broker ended the produce stream")
            if time.monotonic() - opened_at > STABLE_STREAM_S:
                attempts = 0  # the stream was up a while: a new outage, a fresh retry budget
            attempts += 1
            if not self._closing.is_set() and is_transient(error) and attempts <= self._retries:
                delay = backoff_seconds(attempts, *self._backoff)
                log.info("produce stream to %s failed (%s); retry %d in %.2fs",
                         self._server, error.message, attempts, delay)
                if not self._closing.wait(delay):
                    self._reopen()
                    opened_at = time.monotonic()
                    continue
            log.warning("produce stream to %s failed: %s", self._server, error.message)
            self._stop(error)
            return

    def _stop_locked(self) -> None:
        self._call = None
        self._queue = None
        self._reader = None

    def _stop(self, error: LogstoreError) -> None:
        """The reader's last act: fail what is pending; the next send opens a fresh call."""
        with self._lock:
            if self._queue is not None:
                self._queue.put(None)
            self._stop_locked()
            failed = self._take_pending()
            self._failing = True
        try:
            self._fail(failed, error)
        finally:
            with self._lock:
                self._failing = False
                self._idle.notify_all()

    def _answer(self, response: Any) -> None:
        with self._lock:
            pending = self._pending.pop(response.correlation_id, None)
            if not self._pending:
                self._idle.notify_all()
        if pending is None:
            log.warning("produce response with unknown correlation_id %d", response.correlation_id)
            return
        self._slots.release()
        self._on_response(pending.context, response)

    def _reopen(self) -> None:
        """A new call carrying every pending request again, in order."""
        with self._lock:
            if self._queue is not None:
                self._queue.put(None)
            self._queue = queue.SimpleQueue()
            for pending in self._pending.values():
                self._queue.put(pending.payload)
            self._call = self._method(iter(self._queue.get, None))

    def _take_pending(self) -> list[_Pending]:
        failed = list(self._pending.values())
        self._pending.clear()
        self._idle.notify_all()
        return failed

    def _fail(self, failed: list[_Pending], error: LogstoreError) -> None:
        for pending in failed:
            self._slots.release()
            self._on_failure(pending.context, error)

    def _fail_pending(self, error: LogstoreError) -> None:
        with self._lock:
            failed = self._take_pending()
        self._fail(failed, error)
