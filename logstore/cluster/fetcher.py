"""Followers copy their leaders: one fetcher per leader broker, fetching every partition this
broker follows from it in one long-polling ReplicaFetch (Kafka's replica fetcher threads).

The fetch goes over the leader's replica data channel (``replica_channel``: plain TCP or TLS,
no gRPC copies of the megabytes) when the leader advertises one, else over gRPC ReplicaFetch;
``LOGSTORE_REPLICA_TRANSPORT=grpc`` in the follower's environment forces gRPC (for A/B
measurements). The request and the handling of its answer are the same on both.

Before a partition's first fetch under a leader epoch, the follower asks the leader where its own
latest epoch ended (EpochEndOffset) and truncates to the smaller of that and, when the leader
answers with an older epoch, its own end of that epoch (KIP-101, KIP-279): never by high
watermark alone. Then it fetches from its log end; the batches come with the offsets and epochs
the leader assigned and are appended as they are (``append_replica``), so a follower's log is a
byte-for-byte prefix of its leader's. A follower whose log is wholly below the leader's log start
starts again, empty, at the leader's log start.

Errors are per partition: a leader that says NOT_LEADER or FENCED_LEADER_EPOCH is left until the
metadata names another; a broken connection is retried with a short backoff.

Threading: event loop thread only; one asyncio task per fetcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from logstore.api.v1 import cluster_pb2, logstore_pb2_grpc
from logstore.broker import Broker
from logstore.broker.replication import append_replica, restart_replica_at, truncate_replica
from logstore.cluster.replica_channel import (
    ReplicaChannel,
    ReplicaChannelError,
    ReplicaChannelRefused,
)
from logstore.cluster.replica_wire import METHOD, ReplicaFetched, decode_replica_fetch_response
from logstore.errors import CorruptBatchError, LogstoreError

if TYPE_CHECKING:
    from logstore.cluster.replicas import ReplicaManager

log = logging.getLogger(__name__)

BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0
#: Connecting to a leader's replica channel, hello included, gives up after this long.
CONNECT_TIMEOUT_S = 10.0
#: The environment variable that forces gRPC ReplicaFetch ("grpc"); anything else: the channel
#: when the leader has one.
TRANSPORT_ENV = "LOGSTORE_REPLICA_TRANSPORT"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.enable_retries", 0),
]


def _received(data: bytes) -> bytes:
    return data


@dataclass
class FollowedPartition:
    topic: str
    partition: int
    leader_epoch: int
    truncated: bool = False
    #: Skip until this loop time (the leader refused it; wait for new metadata).
    paused_until: float = 0.0


class ReplicaFetcher:
    """Fetches every partition this broker follows from one leader."""

    def __init__(self, manager: FetcherManager, leader_id: int, address: str) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.address = address
        self.partitions: dict[tuple[str, int], FollowedPartition] = {}
        self._wake = asyncio.Event()
        self._channel = manager.channel(address)
        self._stub = logstore_pb2_grpc.LogStoreStub(self._channel)
        # the response is read by hand: its batches stay views of the received bytes
        self._replica_fetch = self._channel.unary_unary(
            METHOD, request_serializer=cluster_pb2.ReplicaFetchRequest.SerializeToString,
            response_deserializer=_received,
        )
        #: The replica channel in use and the address it is connected to.
        self._data: tuple[str, ReplicaChannel] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._backoff = BACKOFF_S

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        self._close_data()
        await self._channel.close()

    def _close_data(self) -> None:
        if self._data is not None:
            self._data[1].close()
            self._data = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            active = [f for f in self.partitions.values() if f.paused_until <= now]
            if not active:
                self._wake.clear()
                waits = [f.paused_until - now for f in self.partitions.values()]
                try:
                    await asyncio.wait_for(self._wake.wait(), min(waits, default=5.0))
                except TimeoutError:
                    pass
                continue
            try:
                untruncated = [f for f in active if not f.truncated]
                if untruncated:
                    await self._truncate(untruncated)
                ready = [f for f in active if f.truncated]
                if ready:
                    await self._fetch_until_woken(ready)
                self._backoff = BACKOFF_S
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("fetch from broker %d failed: %s %s", self.leader_id, exc.code().name, exc.details())
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            except ReplicaChannelRefused as exc:
                log.warning("broker %d refused this broker's replica channel: %s", self.leader_id, exc)
                await asyncio.sleep(MAX_BACKOFF_S)
            except (ReplicaChannelError, OSError, TimeoutError) as exc:
                log.debug("fetch from broker %d over its replica channel failed: %r", self.leader_id, exc)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            except Exception:
                log.exception("replica fetcher for broker %d failed", self.leader_id)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    async def _fetch_until_woken(self, followed: list[FollowedPartition]) -> None:
        """One long-polling fetch, given up when a partition is added meanwhile (its first fetch
        must not wait for the poll to end); a fetch given up appended nothing."""
        self._wake.clear()
        fetch = asyncio.ensure_future(self._fetch(followed))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
        if not fetch.cancelled():
            fetch.result()  # its errors are the loop's

    def _metadata(self) -> list[tuple[str, str]]:
        token = self.manager.token
        return [("authorization", f"Bearer {token}")] if token else []

    async def _truncate(self, followed: list[FollowedPartition]) -> None:
        broker = self.manager.broker
        request = cluster_pb2.EpochEndOffsetRequest(replica_id=self.manager.broker_id)
        for f in followed:
            request.partitions.add(
                topic=f.topic, partition=f.partition, leader_epoch=f.leader_epoch,
                requested_epoch=broker.data_dir.log(f.topic, f.partition).epochs.latest_epoch,
            )
        response = await self._stub.EpochEndOffset(request, timeout=10, metadata=self._metadata())
        for result in response.partitions:
            found = self.partitions.get((result.topic, result.partition))
            if found is None or found not in followed:
                continue
            f = found
            if result.error.reason:
                self._refused(f, result.error.reason)
                continue
            partition_log = broker.data_dir.log(f.topic, f.partition)
            latest = partition_log.epochs.latest_epoch
            log_end = partition_log.log_end_offset
            if latest < 0 or log_end == partition_log.log_start_offset:
                f.truncated = True
                continue
            if result.epoch < 0:
                target = self.manager.replicas.high_watermark(f.topic, f.partition)
            else:
                target = result.end_offset
                if result.epoch < latest:  # the leader never had our latest epoch
                    target = min(target, partition_log.epochs.end_offset_for(result.epoch, log_end)[1])
            if target < log_end:
                log.warning("%s/%d: truncating from %d to %d (diverged from leader %d's log)",
                            f.topic, f.partition, log_end, target, self.leader_id)
                truncate_replica(broker, f.topic, f.partition, max(target, 0))
            f.truncated = True

    async def _fetch(self, followed: list[FollowedPartition]) -> None:
        manager = self.manager
        broker = manager.broker
        request = cluster_pb2.ReplicaFetchRequest(
            replica_id=manager.broker_id, max_wait_ms=manager.max_wait_ms, max_bytes=manager.max_bytes,
        )
        epochs = {}
        for f in followed:
            request.partitions.add(
                topic=f.topic, partition=f.partition, leader_epoch=f.leader_epoch,
                fetch_offset=broker.data_dir.log(f.topic, f.partition).log_end_offset,
            )
            epochs[(f.topic, f.partition)] = f.leader_epoch
        answer = await self._fetch_over_channel(request)
        if answer is None:
            response = await self._replica_fetch(
                request, timeout=manager.max_wait_ms / 1000 + 10, metadata=self._metadata()
            )
            answer = decode_replica_fetch_response(response)
        for fetched in answer:
            result = fetched.fields
            key = (result.topic, result.partition)
            current = self.partitions.get(key)
            if current is None or current.leader_epoch != epochs.get(key):
                continue  # moved to another leader or epoch while the fetch was out
            f = current
            if result.error.reason:
                self._fetch_error(f, result)
                continue
            if fetched.records:
                try:
                    append_replica(broker, f.topic, f.partition, fetched.records)
                except CorruptBatchError as exc:
                    log.warning("%s/%d: %s; checking for divergence again", f.topic, f.partition, exc.message)
                    f.truncated = False
                    continue
                except LogstoreError as exc:
                    log.warning("%s/%d: replica append failed: %s", f.topic, f.partition, exc.message)
                    f.paused_until = asyncio.get_running_loop().time() + BACKOFF_S
                    continue
            manager.replicas.follower_high_watermark(f.topic, f.partition, result.high_watermark)

    async def _fetch_over_channel(self, request: cluster_pb2.ReplicaFetchRequest) -> list[ReplicaFetched] | None:
        """The answer over the leader's replica channel (connected first if needed); None if
        the leader has none (or gRPC is forced). A fetch that fails or is cancelled closes the
        channel: its answer may still be on the way."""
        manager = self.manager
        address = manager.replica_address_of(self.leader_id) if manager.use_channel else ""
        if not address:
            self._close_data()
            return None
        if self._data is None or self._data[0] != address:
            self._close_data()
            channel = await ReplicaChannel.connect(
                address, broker_id=manager.broker_id, token=manager.token,
                ssl_context=manager.ssl_context(), timeout_s=CONNECT_TIMEOUT_S,
            )
            self._data = (address, channel)
        channel = self._data[1]
        try:
            async with asyncio.timeout(manager.max_wait_ms / 1000 + 10):
                return await channel.fetch(request)
        except BaseException:
            self._close_data()
            raise

    def _fetch_error(self, f: FollowedPartition, result: Any) -> None:
        reason = result.error.reason
        if reason == "OFFSET_OUT_OF_RANGE":
            partition_log = self.manager.broker.data_dir.log(f.topic, f.partition)
            if partition_log.log_end_offset < result.log_start_offset or result.log_start_offset < 0:
                start = int(result.error.metadata.get("log_start_offset", result.log_start_offset))
                log.warning("%s/%d: below the leader's log start %d; starting again there",
                            f.topic, f.partition, start)
                restart_replica_at(self.manager.broker, f.topic, f.partition, start)
            else:
                f.truncated = False  # ahead of the leader: find the divergence again
            return
        self._refused(f, reason)

    def _refused(self, f: FollowedPartition, reason: str) -> None:
        log.debug("%s/%d: leader %d refused (%s); waiting for metadata", f.topic, f.partition,
                  self.leader_id, reason)
        f.paused_until = asyncio.get_running_loop().time() + 0.2


class FetcherManager:
    """The fetchers of one broker, one per leader it follows; moves partitions between them as
    the metadata changes leaders."""

    def __init__(self, broker: Broker, broker_id: int, replicas: ReplicaManager, address_of: Any,
                 replica_address_of: Any = None, *, max_wait_ms: int, max_bytes: int, token: str = "",
                 tls_ca: str = "") -> None:
        self.broker = broker
        self.broker_id = broker_id
        self.replicas = replicas
        self.address_of = address_of
        #: broker id -> its replica channel's host:port ("" = none: fetch over gRPC).
        self.replica_address_of = replica_address_of or (lambda broker_id: "")
        self.use_channel = os.environ.get(TRANSPORT_ENV, "") != "grpc"
        self._ssl_context: ssl.SSLContext | None = None
        self.max_wait_ms = max_wait_ms
        self.max_bytes = max_bytes
        self.token = token
        self.tls_ca = tls_ca
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._closing: list[ReplicaFetcher] = []

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.tls_ca:
            with open(self.tls_ca, "rb") as file:
                credentials = grpc.ssl_channel_credentials(file.read())
            return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS to the other brokers' replica channels (the gRPC channels' CA), or None."""
        if self.tls_ca and self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=self.tls_ca)
        return self._ssl_context if self.tls_ca else None

    def add(self, topic: str, partition: int, leader_id: int, leader_epoch: int) -> None:
        self.remove(topic, partition, keep=leader_id)
        address = self.address_of(leader_id)
        if address is None:
            return
        fetcher = self.fetchers.get(leader_id)
        if fetcher is not None and fetcher.address != address:
            self._retire(leader_id)
            fetcher = None
        if fetcher is None:
            fetcher = self.fetchers[leader_id] = ReplicaFetcher(self, leader_id, address)
        fetcher.partitions[(topic, partition)] = FollowedPartition(topic, partition, leader_epoch)
        fetcher.wake()

    def remove(self, topic: str, partition: int, keep: int = -1) -> None:
        """Stop following the partition (except from leader ``keep``, which add() reuses)."""
        for leader_id, fetcher in list(self.fetchers.items()):
            if leader_id == keep:
                continue
            if fetcher.partitions.pop((topic, partition), None) is not None and not fetcher.partitions:
                self._retire(leader_id)

    def _retire(self, leader_id: int) -> None:
        fetcher = self.fetchers.pop(leader_id)
        asyncio.get_running_loop().create_task(fetcher.stop())

    async def stop(self) -> None:
        for fetcher in list(self.fetchers.values()):
            await fetcher.stop()
        self.fetchers.clear()
