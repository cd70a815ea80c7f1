"""The ceiling: how fast gRPC alone moves 1 MiB messages over loopback on this machine.

No logstore code on the wire path: a ``grpc.aio`` server with a generic handler (raw ``bytes``,
no protobuf) and a synchronous client, with the same channel and server options as logstore's
(``logstore.client.channel.CHANNEL_OPTIONS`` and ``logstore.server.app.grpc_options``), in two
directions:

- ``upload``: the client sends ``messages`` x 1 MiB on one stream, no answers (a producer's
  direction, and what the table prints as the upload ceiling until it shows both);
- ``produce``: the producer's shape: the client sends ``messages`` x 4 MiB (``max_request_bytes``)
  on a bidirectional stream, the server answers each with 8 bytes, and at most 5
  (``max_in_flight``) are unanswered, as logstore's ``ProduceStream`` does; the messages cycle
  through 64 MiB of distinct buffers, as a producer's records do;
- ``download``: the server streams 1 MiB messages to the client (a consumer's direction), read
  the way the consumer reads a ``Subscribe`` stream: on a channel with the consumer's extra
  option (``READER_POLLS_STREAMS``: the iterating thread polls the call itself);
- ``consume``: the consumer's shape: as ``download``, but 4 MiB messages (a consumer's
  ``Subscribe`` message size), each read with ``os.pread`` from a 64 MiB file in the page cache
  (the copy out of the page cache any broker makes, into memory past the CPU caches), where
  ``download`` sends one cached buffer again and again.

The server runs as ``python -m bench.peers.grpc_ceiling --listen HOST:PORT``; the client roles
run in an agent process like every other client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import grpc

from bench.peers.clock import Timer

SERVICE = "bench.Ceiling"
UPLOAD = f"/{SERVICE}/Upload"
PRODUCE = f"/{SERVICE}/Produce"
DOWNLOAD = f"/{SERVICE}/Download"
CONSUME = f"/{SERVICE}/Consume"
MESSAGE_BYTES = 1 << 20
#: The consumer's shape: its Subscribe messages' size, read from a file of this many bytes.
CONSUME_MESSAGE_BYTES = 4 << 20
CONSUME_FILE_BYTES = 64 << 20
CONSUME_FILE = "consume-pages.bin"
#: The producer's shape (``ProducerConfig`` defaults): request size and requests in flight.
PRODUCE_MESSAGE_BYTES = 4 << 20
PRODUCE_IN_FLIGHT = 5
#: Messages of the producer's shape cycle through this many buffers (64 MiB, past the caches).
PRODUCE_DISTINCT = 16
COUNT = struct.Struct("<q")


def _server_options() -> list[tuple[str, Any]]:
    from logstore.server.app import grpc_options
    from logstore.server.config import ServerConfig

    return list(grpc_options(ServerConfig()))


def _channel_options() -> list[tuple[str, Any]]:
    from logstore.client.channel import CHANNEL_OPTIONS

    return list(CHANNEL_OPTIONS)


def _consumer_channel_options() -> list[tuple[str, Any]]:
    from logstore.client.channel import READER_POLLS_STREAMS

    return [*_channel_options(), READER_POLLS_STREAMS]


async def _upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    total = 0
    async for message in requests:
        total += len(message)
    return COUNT.pack(total)


async def _produce(requests: AsyncIterator[bytes],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for message in requests:
        yield COUNT.pack(len(message))


async def _download(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    (count,) = COUNT.unpack(request)
    payload = bytes(MESSAGE_BYTES)
    for _ in range(count):
        yield payload


def _write_pages(path: str) -> None:
    """``CONSUME_FILE_BYTES`` of distinct bytes, written once: they stay in the page cache."""
    chunk = bytes(range(256)) * (1 << 12)  # 1 MiB
    with open(path, "wb") as file:
        for index in range(CONSUME_FILE_BYTES // len(chunk)):
            file.write(bytes([index]) + chunk[1:])


async def _consume(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    (count,) = COUNT.unpack(request)
    fd = os.open(CONSUME_FILE, os.O_RDONLY)
    try:
        for index in range(count):
            position = index * CONSUME_MESSAGE_BYTES % CONSUME_FILE_BYTES
            yield os.pread(fd, CONSUME_MESSAGE_BYTES, position)
    finally:
        os.close(fd)


async def serve(listen: str) -> None:
    _write_pages(CONSUME_FILE)  # in the server's working directory (its own, in the bench)
    await serve_raw(listen, SERVICE, {
        "Upload": grpc.stream_unary_rpc_method_handler(_upload),
        "Produce": grpc.stream_stream_rpc_method_handler(_produce),
        "Download": grpc.unary_stream_rpc_method_handler(_download),
        "Consume": grpc.unary_stream_rpc_method_handler(_consume),
    })


async def serve_raw(listen: str, service: str, handlers: dict[str, Any]) -> None:
    """A ``grpc.aio`` server with logstore's options serving ``handlers`` (raw bytes) as
    ``service`` on ``listen``, until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=_server_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def upload(spec: dict[str, Any], barrier: Callable[[], None]) -> dict[str, Any]:
    count = int(spec["messages"])
    payload = bytes(MESSAGE_BYTES)

    def messages() -> Iterator[bytes]:
        for _ in range(count):
            yield payload

    with grpc.insecure_channel(spec["server"], options=_channel_options()) as channel:
        call = channel.stream_unary(UPLOAD)
        call(iter([b"\0" * 16]), timeout=30)  # connect and warm the path before timing
        timer = Timer()
        barrier()
        timer.start()
        (received,) = COUNT.unpack(call(messages(), timeout=spec["timeout_s"]))
        timer.stop()
    if received != count * MESSAGE_BYTES:
        raise RuntimeError(f"the server received {received} bytes, not {count * MESSAGE_BYTES}")
    return timer.result(count, bytes=received)


def produce(spec: dict[str, Any], barrier: Callable[[], None]) -> dict[str, Any]:
    """``messages`` x 4 MiB, each answered, at most ``PRODUCE_IN_FLIGHT`` unanswered."""
    count = int(spec["messages"])
    # distinct messages, as a producer's are: the same buffer each time would stay in the cache
    payloads = [bytes([index]) * PRODUCE_MESSAGE_BYTES for index in range(PRODUCE_DISTINCT)]
    room = threading.Semaphore(PRODUCE_IN_FLIGHT)

    def messages(total: int) -> Iterator[bytes]:
        for index in range(total):
            room.acquire()
            yield payloads[index % PRODUCE_DISTINCT]

    def answered(total: int, timeout_s: float) -> int:
        received = 0
        for answer in call(messages(total), timeout=timeout_s):
            (size,) = COUNT.unpack(answer)
            received += size
            room.release()
        return received

    with grpc.insecure_channel(spec["server"], options=_channel_options()) as channel:
        call = channel.stream_stream(PRODUCE)
        answered(1, 30)  # connect and warm the path before timing
        timer = Timer()
        barrier()
        timer.start()
        received = answered(count, spec["timeout_s"])
        timer.stop()
    if received != count * PRODUCE_MESSAGE_BYTES:
        raise RuntimeError(f"the server received {received} bytes, not "
                           f"{count * PRODUCE_MESSAGE_BYTES}")
    return timer.result(count, bytes=received)


def download(spec: dict[str, Any], barrier: Callable[[], None]) -> dict[str, Any]:
    return _stream_down(spec, barrier, DOWNLOAD, MESSAGE_BYTES)


def consume(spec: dict[str, Any], barrier: Callable[[], None]) -> dict[str, Any]:
    """``download`` in the consumer's shape: 4 MiB messages read from the page cache."""
    return _stream_down(spec, barrier, CONSUME, CONSUME_MESSAGE_BYTES)


def _stream_down(spec: dict[str, Any], barrier: Callable[[], None], method: str,
                 message_bytes: int) -> dict[str, Any]:
    count = int(spec["messages"])
    with grpc.insecure_channel(spec["server"], options=_consumer_channel_options()) as channel:
        call = channel.unary_stream(method)
        for _ in call(COUNT.pack(1), timeout=30):  # connect before timing
            pass
        timer = Timer()
        barrier()
        timer.start()
        received = 0
        for message in call(COUNT.pack(count), timeout=spec["timeout_s"]):
            received += len(message)
        timer.stop()
    if received != count * message_bytes:
        raise RuntimeError(f"received {received} bytes, not {count * message_bytes}")
    return timer.result(count, bytes=received)


ROLES = {"upload": upload, "produce": produce, "download": download, "consume": consume}


def serve_main(serve_on: Callable[[str], Coroutine[Any, Any, None]], description: str) -> int:
    """``python -m MODULE --listen HOST:PORT``: run ``serve_on(listen)`` until stopped."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    args = parser.parse_args()
    asyncio.run(serve_on(args.listen))
    return 0


def main() -> int:
    return serve_main(serve, "raw gRPC bandwidth server for the ceiling probe")


if __name__ == "__main__":
    sys.exit(main())
