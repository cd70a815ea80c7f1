"""The producer's sender thread: drain the accumulator, encode batches, send requests, resolve.

Loop: take ready batches (full, lingered, or everything when flushing) up to ``max_request_bytes``,
encode the ones ``send`` filled (``ProducerBatch.encode``), group them per partition in order into
one hand-serialized ``ProduceRequest`` (``wire.encode_produce_request``) and hand it to the
``ProduceStream``, which blocks while ``max_in_flight`` requests are unanswered. Responses arrive
on the stream's reader thread (``_on_response``): each batch gets its base offset, or its
partition's error, and its futures resolve.

Also refreshes partition counts every ``metadata_max_age_ms``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from logstore.client.accumulator import Accumulator
from logstore.client.batch import ProducerBatch
from logstore.client.channel import error_from_detail
from logstore.client.config import ProducerConfig
from logstore.client.stream import ProduceStream
from logstore.client.wire import encode_produce_request
from logstore.errors import LogstoreError

log = logging.getLogger("logstore.client")

#: How long the sender sleeps when nothing is open (it is woken as soon as a batch opens).
IDLE_WAIT = 1.0


class Sender:
    def __init__(
        self,
        accumulator: Accumulator,
        stream_factory: Callable[..., ProduceStream],
        config: ProducerConfig,
        refresh: Callable[[str], object],
    ) -> None:
        self._accumulator = accumulator
        self._config = config
        self._acks = config.acks_wire
        self._refresh = refresh
        self._stream = stream_factory(on_response=self._on_response, on_failure=self._on_failure)
        self._flush_requests = 0
        self._flush_lock = threading.Lock()
        self._stopping = threading.Event()
        self._last_metadata = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="logstore-producer-sender",
                                        daemon=True)
        self._thread.start()

    # -- control from the producer -----------------------------------------------------------

    def begin_flush(self) -> None:
        """Send every open batch now, lingering or not, until ``end_flush``."""
        with self._flush_lock:
            self._flush_requests += 1
        self._accumulator.wake()

    def end_flush(self) -> None:
        with self._flush_lock:
            self._flush_requests -= 1

    def stop(self, timeout: float | None) -> None:
        """Send what is queued, wait for answers (up to ``timeout``), end the stream."""
        self.begin_flush()
        self._stopping.set()
        self._accumulator.wake()
        self._thread.join(timeout)
        self._stream.close(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        accumulator = self._accumulator
        max_bytes = self._config.max_request_bytes
        while True:
            force = self._flush_requests > 0
            batches, wait = accumulator.drain(max_bytes, force=force)
            if batches:
                try:
                    self._send(batches)
                except Exception as exc:  # a bug or an encoding error: fail these records only
                    log.exception("producer sender failed to send %d batches", len(batches))
                    error = exc if isinstance(exc, LogstoreError) else LogstoreError(str(exc))
                    for batch in batches:
                        self._finish(batch, error)
                continue
            if self._stopping.is_set() and not accumulator.pending():
                return
            self._maybe_refresh_metadata()
            accumulator.sleep(IDLE_WAIT if wait is None else wait, self._urgent)

    def _urgent(self) -> bool:
        """A flush or stop came in since the last drain: drain again instead of sleeping.
        Called under the accumulator's lock."""
        accumulator = self._accumulator
        if self._stopping.is_set():
            return True
        return self._flush_requests > 0 and bool(accumulator.opened or accumulator.ready)

    def _send(self, batches: list[ProducerBatch]) -> None:
        codec = self._config.codec
        grouped: dict[tuple[str, int], list[bytes]] = {}
        for batch in batches:
            grouped.setdefault((batch.topic, batch.partition), []).append(batch.encode(codec))
        correlation_id = self._stream.next_id()
        payload = encode_produce_request(
            self._acks,
            [(topic, partition, blobs) for (topic, partition), blobs in grouped.items()],
            correlation_id,
        )
        self._stream.send(correlation_id, payload, batches)

    def _maybe_refresh_metadata(self) -> None:
        now = time.monotonic()
        if now - self._last_metadata < self._config.metadata_max_age_ms / 1000.0:
            return
        self._last_metadata = now
        for topic in list(self._accumulator.topics):
            try:
                self._refresh(topic)
            except LogstoreError as exc:
                log.info("metadata refresh of %r failed: %s", topic, exc.message)

    # -- answers (on the stream's reader thread) -----------------------------------------------

    def _on_response(self, batches: list[ProducerBatch], response: Any) -> None:
        if response.HasField("error"):
            error = error_from_detail(response.error)
            for batch in batches:
                self._finish(batch, error)
            return
        results = {(result.topic, result.partition): result for result in response.results}
        next_offsets: dict[tuple[str, int], int] = {}
        for batch in batches:
            key = (batch.topic, batch.partition)
            result = results.get(key)
            if result is None:
                self._finish(batch, LogstoreError(
                    f"the broker did not answer for {batch.topic}/{batch.partition}"))
            elif result.HasField("error"):
                self._finish(batch, error_from_detail(result.error))
            elif result.base_offset < 0:  # acks=0
                self._finish(batch, None, -1)
            else:
                base = next_offsets.get(key, result.base_offset)
                next_offsets[key] = base + batch.count
                self._finish(batch, None, base)

    def _on_failure(self, batches: list[ProducerBatch], error: LogstoreError) -> None:
        for batch in batches:
            self._finish(batch, error)

    def _finish(self, batch: ProducerBatch, error: LogstoreError | None, base: int = -1) -> None:
        self._accumulator.finished(batch)
        try:
            if error is None:
                batch.complete(base)
            else:
                batch.fail(error)
        except Exception:  # a user callback raised: keep the sender alive
            log.exception("a producer callback raised")
