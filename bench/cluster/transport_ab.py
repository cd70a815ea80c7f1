"""CPU per MiB of a replica fetch over gRPC ReplicaFetch vs over a plain TCP frame, side by side:
``python -m bench.cluster.transport_ab [--mib 64] [--sizes 1,2,4] [--rounds 3]``.

A leader process holds a 64 MiB "segment" and answers both transports with the same bytes: over
gRPC the response is built as the broker builds it (``wire``: one copy out of the segment, then
grpcio's own copies), over TCP as ``[u32 header length][ReplicaFetchResponse without records]
[u32 records length per partition][records]`` sent with ``sendmsg`` straight from the segment's
memoryview (both ends are ``logstore.cluster.replica_channel``'s code). The follower (this
process) fetches ``--mib`` MiB in ranges of each size, parsing each answer into memoryviews (gRPC:
``replica_wire``; TCP: ``recv_into`` a reusable bytearray.
Per transport and size it prints the CPU of the follower and of the leader per MiB (medians of
``--rounds`` alternating rounds) and the TCP / gRPC ratio. No disk writes: what differs is only
the transport, so the appends both would do are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import grpc

from logstore.api.v1 import cluster_pb2
from logstore.cluster.replica_channel import (
    Connection,
    ReplicaChannel,
    ReplicaChannelError,
    frame,
    response_pieces,
)
from logstore.cluster.replica_wire import METHOD, decode_replica_fetch_response
from logstore.server import wire

SEGMENT_BYTES = 64 << 20


def _segment() -> memoryview:
    return memoryview(os.urandom(1 << 20) * (SEGMENT_BYTES >> 20))


def _small(size: int) -> cluster_pb2.ReplicaFetchedPartition:
    return cluster_pb2.ReplicaFetchedPartition(topic="t", partition=0, high_watermark=size,
                                               log_start_offset=0, log_end_offset=size)


async def _serve() -> None:
    segment = _segment()

    async def replica_fetch(request: cluster_pb2.ReplicaFetchRequest, context: object) -> bytes:
        p = request.partitions[0]
        start = p.fetch_offset % (SEGMENT_BYTES - request.max_bytes)
        records = segment[start : start + request.max_bytes]
        return wire.encode_fetch_response([wire.encode_fetched_partition(_small(len(records)), records)])

    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
        ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
    ])
    handler = grpc.unary_unary_rpc_method_handler(
        replica_fetch, request_deserializer=cluster_pb2.ReplicaFetchRequest.FromString,
        response_serializer=lambda b: b)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "logstore.api.v1.LogStore", {"ReplicaFetch": handler})])
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    print(grpc_port, listener.getsockname()[1], flush=True)

    async def connection(sock: socket.socket) -> None:
        channel = Connection(sock)
        try:
            await channel.read_frame()  # the hello
            await channel.send(frame(b'{"ok": true}'))
            while True:
                request = cluster_pb2.ReplicaFetchRequest.FromString(await channel.read_frame())
                p = request.partitions[0]
                start = p.fetch_offset % (SEGMENT_BYTES - request.max_bytes)
                records = segment[start : start + request.max_bytes]
                await channel.send(response_pieces([(_small(len(records)), records)]))
        except ReplicaChannelError:
            channel.close()

    while True:
        sock, _ = await loop.sock_accept(listener)
        loop.create_task(connection(sock))


def _cpu_of(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _via_grpc(port: int, size: int, count: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
    ]) as channel:
        call = channel.unary_unary(METHOD, request_serializer=cluster_pb2.ReplicaFetchRequest.SerializeToString,
                                   response_deserializer=lambda b: b)
        for i in range(count):
            request = cluster_pb2.ReplicaFetchRequest(replica_id=1, max_bytes=size)
            request.partitions.add(topic="t", partition=0, leader_epoch=1, fetch_offset=i * size)
            fetched = decode_replica_fetch_response(await call(request))
            assert len(fetched[0].records) == size


async def _via_tcp(port: int, size: int, count: int) -> None:
    channel = await ReplicaChannel.connect(f"127.0.0.1:{port}", broker_id=1, token="", ssl_context=None,
                                           timeout_s=10)
    for i in range(count):
        request = cluster_pb2.ReplicaFetchRequest(replica_id=1, max_bytes=size)
        request.partitions.add(topic="t", partition=0, leader_epoch=1, fetch_offset=i * size)
        fetched = await channel.fetch(request)
        assert len(fetched[0].records) == size
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB fetched per transport, size and round")
    parser.add_argument("--sizes", default="1,2,4", help="MiB per fetch, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    leader = subprocess.Popen([sys.executable, "-m", "bench.cluster.transport_ab", "--serve"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert leader.stdout is not None
        grpc_port, tcp_port = (int(x) for x in leader.stdout.readline().split())
        print(f"load: {os.getloadavg()[0]:.1f}; ms of CPU per MiB, median of {args.rounds} rounds")
        print("| MiB/fetch | gRPC follower | gRPC leader | TCP follower | TCP leader | TCP/gRPC (both ends) | goal <= 0.75 |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for size_mib in (int(s) for s in args.sizes.split(",")):
            size = size_mib << 20
            count = max(args.mib // size_mib, 1)
            samples: dict[str, list[tuple[float, float]]] = {"grpc": [], "tcp": []}
            for _ in range(args.rounds):
                for name, run in (("grpc", _via_grpc), ("tcp", _via_tcp)):
                    port = grpc_port if name == "grpc" else tcp_port
                    mine, theirs = time.process_time(), _cpu_of(leader.pid)
                    asyncio.run(run(port, size, count))
                    mib = count * size_mib
                    samples[name].append(((time.process_time() - mine) * 1000 / mib,
                                          (_cpu_of(leader.pid) - theirs) * 1000 / mib))
            med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
                   for k, v in samples.items()}
            ratio = sum(med["tcp"]) / sum(med["grpc"])
            print(f"| {size_mib} | {med['grpc'][0]:.2f} | {med['grpc'][1]:.2f} | {med['tcp'][0]:.2f} | "
                  f"{med['tcp'][1]:.2f} | {ratio:.2f} | {'yes' if ratio <= 0.75 else 'NO'} |", flush=True)
    finally:
        leader.terminate()
        leader.wait()


if __name__ == "__main__":
    main()
