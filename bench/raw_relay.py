"""The floor under end-to-end latency: the same gRPC hops as logstore's, with no logstore code.

A ``grpc.aio`` relay server (generic handlers, raw ``bytes``, logstore's server options) takes
messages on a ``Publish`` stream (each answered with an empty ack, as a produce request is) and
pushes each one to every open ``Subscribe`` stream. The client side copies logstore's threading:

- the sender puts each message on a ``SimpleQueue`` that gRPC's request thread feeds to the call,
  and a reader thread takes the acks (``client/stream.py``'s ``ProduceStream``);
- the receiver's reader thread iterates its ``Subscribe`` call, polling the call itself
  (``READER_POLLS_STREAMS``), and hands each message over a ``SimpleQueue`` to the thread that
  waits for it (``client/subscription.py`` and ``Consumer.poll``); a second receiver, subscribed
  at the same time, reads through gRPC's default channel spin thread instead (logstore before
  ``READER_POLLS_STREAMS``), so the two are compared under the same load.

One message per record, stamped with ``time.time_ns()`` like the latency workload's records, at
a low fixed rate (what logstore's producer does while nothing is in flight): the latencies are
what gRPC Python and the thread hand-offs alone cost on this machine, the floor logstore's
``send() -> poll()`` can approach but not pass.

``python -m bench.raw_relay --listen HOST:PORT`` runs the server; ``measure`` the clients.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from bench.peers.clock import Pacer
from bench.peers.grpc_ceiling import serve_main, serve_raw
from bench.peers.records import STAMP, filler, latency_summary, read_stamp

SERVICE = "bench.Relay"
PUBLISH = f"/{SERVICE}/Publish"
SUBSCRIBE = f"/{SERVICE}/Subscribe"


async def serve(listen: str) -> None:
    subscribers: list[asyncio.Queue[bytes]] = []

    async def publish(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in requests:
            for subscriber in subscribers:
                subscriber.put_nowait(message)
            yield b""

    async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
        mine: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.append(mine)
        try:
            yield b""  # subscribed: the receiver may tell the sender to start
            while True:
                yield await mine.get()
        finally:
            subscribers.remove(mine)

    await serve_raw(listen, SERVICE, {
        "Publish": grpc.stream_stream_rpc_method_handler(publish),
        "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
    })


def _channel(address: str, options: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
    from logstore.client.channel import CHANNEL_OPTIONS

    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS + list(options))


def _receive(address: str, total: int, reader_polls: bool, ready: Any, answer: Any) -> None:
    from bench.latency_trace import context_switches
    from logstore.client.channel import READER_POLLS_STREAMS

    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    options = (READER_POLLS_STREAMS,) if reader_polls else ()
    with _channel(address, options) as channel:
        call = channel.unary_stream(SUBSCRIBE)(b"")

        def read() -> None:
            try:
                for message in call:
                    inbox.put(message)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        inbox.get(timeout=30)  # the subscription is open
        ready.set()
        latencies = np.zeros(total, dtype=np.int64)
        count = 0
        switches = context_switches()
        try:
            while count < total:
                message = inbox.get(timeout=30)
                latencies[count] = time.time_ns() - read_stamp(message)
                count += 1
        except queue.Empty:
            pass
        switches = context_switches() - switches
        call.cancel()
    answer.put((reader_polls, latencies[:count].tolist(), switches / max(count, 1)))


#: The receivers ``measure`` runs side by side: logstore's (the reader thread polls its call)
#: and gRPC's default (the channel's spin thread reads it and wakes the reader thread).
READERS = {True: "reader thread polls its call", False: "channel spin thread wakes the reader"}


def measure(address: str, rate: int, seconds: float, settle_s: float = 0.3) -> dict[str, Any]:
    """Per receiver of ``READERS`` (both subscribed at once, so under the same load): the
    latency summary (ms) of ``rate`` messages/s of 100 B for ``seconds``, after ``settle_s``,
    and its voluntary context switches per message (``switches``)."""
    total = int(rate * seconds)
    context = multiprocessing.get_context("spawn")
    answer = context.SimpleQueue()
    receivers, readies = [], []
    for reader_polls in READERS:
        ready = context.Event()
        receivers.append(context.Process(target=_receive, daemon=True,
                                         args=(address, total, reader_polls, ready, answer)))
        receivers[-1].start()
        readies.append(ready)
    if not all(ready.wait(60) for ready in readies):
        raise RuntimeError("the relay's receivers did not subscribe")
    tail = filler(100, 7)
    outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    results: dict[str, Any] = {}
    with _channel(address) as channel:
        call = channel.stream_stream(PUBLISH)(iter(outbox.get, None))
        acks = threading.Thread(target=_drain, args=(call,), daemon=True)
        acks.start()
        pacer = Pacer(rate, total)
        pacer.start()
        sent = 0
        while sent < total:
            due = pacer.due()
            if due <= sent:
                time.sleep(pacer.idle_s)
                continue
            for _ in range(due - sent):
                outbox.put(STAMP.pack(time.time_ns()) + tail)
            sent = due
        for _ in receivers:
            reader_polls, latencies, switches = answer.get()
            keep = int(min(settle_s * rate, len(latencies) // 2))
            summary = latency_summary(np.asarray(latencies, dtype=np.int64)[keep:])
            results[READERS[reader_polls]] = {**summary, "switches": switches}
        outbox.put(None)
        acks.join(10)
    for receiver in receivers:
        receiver.join(10)
    return results


def _drain(call: Any) -> None:
    try:
        for _ in call:
            pass
    except grpc.RpcError:  # the channel closed at the end
        pass


class RelayServer:
    """``python -m bench.raw_relay`` on a free loopback port, stopped by ``close``."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{sock.getsockname()[1]}"
        self.process = subprocess.Popen([sys.executable, "-m", "bench.raw_relay",
                                         "--listen", self.address])
        deadline = time.monotonic() + 30
        with _channel(self.address) as channel:
            while True:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0)
                    return
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.close()
                        raise RuntimeError("the relay server did not start") from None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main() -> int:
    return serve_main(serve, "raw gRPC relay server for the latency floor")


if __name__ == "__main__":
    sys.exit(main())
