"""A ``ShareConsumer``'s calls in a cluster: each partition's to the broker that serves its
share-partition — the leader of the partition (the cluster keeps a share-partition's state
with its partition's leader; see the README's queue section).

A poll asks every broker that leads a partition of the consumer's topics at once (one
``ShareFetch`` each, ``max_records`` shared between them), first without waiting, then — if
none had records — long-polling in rounds of at most ``ROUND_MS`` until the poll's timeout, and
returns what they acquired together; when no broker answered, with a transient error (NOT_LEADER,
UNAVAILABLE, ...), it asks again, after ``RETRY_BACKOFF_MS``, until the
timeout, and only then raises. Acknowledgements go to the leader of their partition, with
that broker's fetch or ``ShareAcknowledge``. A broker that fails (gone, no longer the leader)
makes the client read the cluster map again. The acknowledgements a poll's broker did not take
are queued again, for the next call; ``commit()`` sends them again itself (to the partition's
leader as the map then says) until its timeout, so it returns only once every one of them was
answered (applied, or refused for a reason other than ``NOT_LEADER`` or
``NOT_ENOUGH_REPLICAS``, which it sends again) — and raises, with them queued again, if that
does not happen in time. A poll also asks again, within its timeout, while its brokers answer
``NOT_ENOUGH_REPLICAS``. The records it had handed out
come back there (Available again, delivery counts kept), so an acknowledgement of one of them
that reaches the new leader is refused with ``RECORD_NOT_ACQUIRED``.

Thread-safety: the consumer's (one thread at a time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from logstore.api.v1 import share_pb2
from logstore.client.channel import Channels, error_from_rpc, is_transient
from logstore.client.metadata import Metadata
from logstore.errors import LogstoreError, NotLeaderError

#: Longest wait of one round of a long poll over several brokers.
ROUND_MS = 100
#: Wait before asking again when no broker answered a poll (NOT_LEADER, UNAVAILABLE...).
RETRY_BACKOFF_MS = 50
#: Acknowledgement refusals that mean "not now, here": the range is sent again (to the
#: partition's leader as the map then says) instead of being reported.
RESEND_REASONS = frozenset(("NOT_LEADER", "NOT_ENOUGH_REPLICAS"))


def _retriable(error: LogstoreError) -> bool:
    """Worth asking again within the call's timeout: a transient failure, or the state
    partition below its min ISR (a follower catching up)."""
    return is_transient(error) or error.reason == "NOT_ENOUGH_REPLICAS"

Messages = Sequence[share_pb2.ShareAcknowledgement]


class ShareRouter:
    def __init__(self, metadata: Metadata, channels: Channels, timeout_s: float) -> None:
        self.metadata = metadata
        self.channels = channels
        self.timeout_s = timeout_s

    def clustered(self) -> bool:
        return self.metadata.routes_by_leader()

    def _leaders(self, topics: Sequence[str]) -> list[str]:
        """Addresses of the brokers leading a partition of ``topics`` (the map read again when
        some partition has no known leader)."""
        view = self.metadata.view_for(topics)
        addresses: dict[str, None] = {}
        for topic in topics:
            route = view.topics.get(topic)
            if route is None:
                addresses[self.metadata.address()] = None  # the broker says why (UNKNOWN_TOPIC)
                continue
            for placement in route.partitions:
                address = view.leader_address(topic, placement.partition)
                if address is None:
                    self.metadata.invalidate()
                else:
                    addresses[address] = None
        return list(addresses)

    def split(self, messages: Messages) -> dict[str, list[share_pb2.ShareAcknowledgement]]:
        """Acknowledgements by the address of their partition's leader (those without a known
        leader under the current address: it refuses them with NOT_LEADER, and they are sent
        again)."""
        view = self.metadata.view_for({m.topic for m in messages})
        fallback = self.metadata.address()
        groups: dict[str, list[share_pb2.ShareAcknowledgement]] = {}
        for address, part in view.group_by_leader(messages, lambda m: (m.topic, m.partition), fallback).items():
            groups.setdefault(address or fallback, []).extend(part)
        return groups

    def _failed(self, exc: grpc.RpcError, address: str) -> LogstoreError:
        error = error_from_rpc(exc, address)
        self.metadata.observe(error, address)
        return error

    def fetch(self, request: share_pb2.ShareFetchRequest, wait_ms: int,
              restore: Callable[[Messages], None]) -> share_pb2.ShareFetchResponse:
        """One poll over every leader; raises only when no broker answered."""
        deadline = time.monotonic() + wait_ms / 1000
        merged = share_pb2.ShareFetchResponse()
        acks = self.split(list(request.acknowledgements))
        round_ms = 0
        while True:
            addresses = list(dict.fromkeys([*self._leaders(list(request.topics)), *acks]))
            share = max(1, -(-request.max_records // max(len(addresses), 1)))
            calls = []
            for address in addresses:
                part = share_pb2.ShareFetchRequest()
                part.CopyFrom(request)
                part.max_records = share
                part.max_wait_ms = round_ms
                del part.acknowledgements[:]
                part.acknowledgements.extend(acks.pop(address, []))
                stub = self.channels.stub(address)
                calls.append((address, part, stub.ShareFetch.future(part, timeout=self.timeout_s + round_ms / 1000)))
            failure: LogstoreError | None = None
            answered = False
            for address, part, call in calls:
                try:
                    response = call.result()
                except grpc.RpcError as exc:
                    failure = failure or self._failed(exc, address)
                    restore(part.acknowledgements)
                    continue
                answered = True
                merged.partitions.extend(response.partitions)
                self._keep_refusals(response.refused, part.acknowledgements, merged, restore)
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if not answered and failure is not None:
                if not _retriable(failure) or remaining_ms <= 0:
                    raise failure
                time.sleep(min(RETRY_BACKOFF_MS, remaining_ms) / 1000)  # (a leader moving: the map is read again)
                continue
            if merged.partitions or remaining_ms <= 0:
                return merged
            round_ms = min(ROUND_MS, remaining_ms)

    def _keep_refusals(self, refused: Any, sent: Messages, merged: share_pb2.ShareFetchResponse | None,
                       restore: Callable[[Messages], None]) -> list[Any]:
        """Refusals to report; those of ``RESEND_REASONS`` are queued again instead (their
        partition moved, or its state partition is below min ISR: sent again)."""
        kept = []
        moved = []
        for item in refused:
            if item.error.reason in RESEND_REASONS:
                moved.append(item)
            else:
                kept.append(item)
        if moved:
            self.metadata.invalidate()
            restore([m for m in sent if any(
                m.topic == r.topic and m.partition == r.partition and m.first_offset == r.first_offset
                and m.last_offset == r.last_offset for r in moved)])
        if merged is not None:
            merged.refused.extend(kept)
        return kept

    def acknowledge(self, request: share_pb2.ShareAcknowledgeRequest, topics: Sequence[str],
                    restore: Callable[[Messages], None]) -> list[Any]:
        """``ShareAcknowledge`` to each leader of the acknowledgements' partitions (with
        ``leave``: to every leader of ``topics`` too); the refusals to report, once every
        acknowledgement was answered. Ranges refused with ``NOT_LEADER`` and calls that failed
        with a transient error are sent again (to the partition's leader as the map then says)
        until ``timeout_s``; then the first failure is raised and they are queued again.
        ``UNKNOWN_GROUP`` of a broker that never served the member is no failure."""
        deadline = time.monotonic() + self.timeout_s
        pending = list(request.acknowledgements)
        leave_at = self._leaders(topics) if request.leave else []
        refusals: list[Any] = []
        while True:
            acks = self.split(pending)
            again: list[share_pb2.ShareAcknowledgement] = []
            failure: LogstoreError | None = None
            for address in dict.fromkeys([*acks, *leave_at]):
                part = share_pb2.ShareAcknowledgeRequest()
                part.CopyFrom(request)
                del part.acknowledgements[:]
                part.acknowledgements.extend(acks.get(address, []))
                try:
                    response = self.channels.stub(address).ShareAcknowledge(part, timeout=self.timeout_s)
                except grpc.RpcError as exc:
                    error = self._failed(exc, address)
                    if error.reason == "UNKNOWN_GROUP":
                        continue  # never served this group: nothing to acknowledge or leave there
                    again += part.acknowledgements
                    failure = failure or error
                    continue
                refusals += self._keep_refusals(response.refused, part.acknowledgements, None, again.extend)
            if not again:
                return refusals
            if failure is None:
                failure = NotLeaderError(again[0].topic, again[0].partition)
            if not _retriable(failure) or time.monotonic() >= deadline:
                restore(again)
                raise failure
            time.sleep(RETRY_BACKOFF_MS / 1000)
            pending, leave_at = again, []
