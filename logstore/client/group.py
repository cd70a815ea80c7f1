"""A consumer's group membership: the heartbeat thread, and the group's offset calls.

The broker computes assignments (Kafka's consumer protocol, KIP-848); a member learns what it owns
from each ``GroupHeartbeat`` answer. ``Membership`` runs one daemon thread that heartbeats every
``heartbeat_interval_ms`` (the broker says how often):

- to join: ``member_epoch`` 0 and the subscribed topics; the broker hands out a member id;
- afterwards: the member id, the current epoch, ``owned`` (the partitions the consumer holds now)
  and ``ms_since_poll`` (the broker evicts a member that stopped polling);
- to leave (``stop``): epoch -1, or -2 for a static member that will be back (it keeps its
  partitions for the session timeout).

It never changes what the consumer holds. Each new assignment is left in ``target`` for the
consumer's own thread, which applies it inside ``poll()`` (revoke: callback, commit, drop; assign:
position from the committed offset, callback) and publishes what it holds with ``set_owned``; the
next heartbeat reports that, which is what lets the broker hand revoked partitions to their new
owner. When the broker no longer knows the member (UNKNOWN_MEMBER: evicted, broker restarted) or
its epoch is stale (FENCED_MEMBER_EPOCH), ``lost`` is set for the consumer (which drops
everything, without committing) and the thread rejoins with epoch 0.

Thread-safety: ``lock`` guards every field shared between the thread and the consumer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import grpc

from logstore.api.v1 import groups_pb2
from logstore.client.channel import (
    call_with_retries,
    error_from_detail,
    error_from_rpc,
    is_transient,
)
from logstore.client.config import ConsumerConfig, backoff_seconds
from logstore.client.models import GroupMetadata, TopicPartition
from logstore.errors import LogstoreError

log = logging.getLogger("logstore.client")

JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2
#: Errors after which the member must rejoin: its partitions may already be someone else's.
REJOIN_REASONS = ("UNKNOWN_MEMBER", "FENCED_MEMBER_EPOCH")
#: Heartbeat interval until the broker says otherwise.
DEFAULT_INTERVAL_S = 0.5


class Membership:
    def __init__(self, stub: Any, server: str, group_id: str, config: ConsumerConfig,
                 topics: list[str]) -> None:
        self.lock = threading.Lock()
        self.group_id = group_id
        self.member_id = ""
        self.member_epoch = JOIN_EPOCH
        self.topics = list(topics)
        #: The newest assignment the consumer has not applied yet (None: nothing new).
        self.target: frozenset[TopicPartition] | None = None
        #: The member was evicted or fenced: the consumer must drop what it holds.
        self.lost = False
        #: How many times the member lost its membership; partitions the consumer got in an
        #: earlier generation are not its to commit.
        self.generation = 0
        #: An error the consumer should raise from poll (a refused subscription).
        self.error: LogstoreError | None = None
        #: Set whenever ``target``, ``lost`` or ``error`` changes.
        self.changed = threading.Event()
        self._owned: list[TopicPartition] = []
        self._last_poll = time.monotonic()
        self._last_assignment: frozenset[TopicPartition] | None = None
        self._topics_changed = False
        self._interval = DEFAULT_INTERVAL_S
        self._stub = stub
        self._server = server
        self._config = config
        self._timeout = config.request_timeout_ms / 1000.0
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logstore-consumer-heartbeat",
                                        daemon=True)

    # -- the consumer's side -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def subscribe(self, topics: list[str]) -> None:
        with self.lock:
            self.topics = list(topics)
            self._topics_changed = True
        self.wake()

    def wake(self) -> None:
        """Heartbeat now (the consumer gave partitions up, or a fetch was refused)."""
        self._wakeup.set()

    def polled(self) -> None:
        self._last_poll = time.monotonic()

    def set_owned(self, owned: Iterable[TopicPartition]) -> None:
        with self.lock:
            self._owned = sorted(owned)

    def take(self) -> tuple[int, bool, frozenset[TopicPartition] | None, LogstoreError | None]:
        """(generation, lost, new target, error) since the last call, each cleared."""
        with self.lock:
            lost, target, error = self.lost, self.target, self.error
            self.lost = False
            self.target = None
            self.error = None
            self.changed.clear()
            return self.generation, lost, target, error

    def metadata(self) -> GroupMetadata:
        with self.lock:
            return GroupMetadata(self.group_id, self.member_id, self.member_epoch)

    def snapshot(self) -> tuple[int, GroupMetadata]:
        """(generation, metadata), read together."""
        with self.lock:
            return self.generation, GroupMetadata(self.group_id, self.member_id,
                                                  self.member_epoch)

    def stop(self) -> None:
        """Stop heartbeating and leave the group (a static member leaves for now: epoch -2)."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread.is_alive():
            self._thread.join(self._timeout)
        with self.lock:
            member_id, epoch = self.member_id, self.member_epoch
        if not member_id or epoch == JOIN_EPOCH:
            return
        leave = STATIC_LEAVE_EPOCH if self._config.group_instance_id else LEAVE_EPOCH
        request = groups_pb2.GroupHeartbeatRequest(
            group_id=self.group_id, member_id=member_id, member_epoch=leave,
            instance_id=self._config.group_instance_id or "",
        )
        try:
            self._stub.GroupHeartbeat(request, timeout=min(self._timeout, 5.0))
        except grpc.RpcError as exc:
            log.info("group %s: leaving failed: %s", self.group_id,
                     error_from_rpc(exc, self._server).message)
        except LogstoreError as exc:  # no coordinator found
            log.info("group %s: leaving failed: %s", self.group_id, exc.message)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            wait = self._interval
            try:
                self._heartbeat()
                failures = 0
            except (grpc.RpcError, LogstoreError) as exc:
                # a LogstoreError: the coordinator could not be found (see routing)
                error = exc if isinstance(exc, LogstoreError) else error_from_rpc(exc, self._server)
                if error.reason in REJOIN_REASONS:
                    self._rejoin(error)
                    wait = 0.0
                else:
                    failures += 1
                    config = self._config
                    wait = backoff_seconds(failures, config.retry_backoff_ms,
                                           config.retry_backoff_max_ms)
                    if not is_transient(error):  # down, or the coordinator moved: retry
                        log.warning("group %s: heartbeat failed: %s", self.group_id,
                                    error.message)
                        with self.lock:
                            self.error = error
                            self.changed.set()
            if wait > 0 and self._wakeup.wait(wait):
                self._wakeup.clear()

    def _heartbeat(self) -> None:
        config = self._config
        with self.lock:
            joining = self.member_epoch == JOIN_EPOCH
            request = groups_pb2.GroupHeartbeatRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                member_epoch=self.member_epoch,
                instance_id=config.group_instance_id or "",
                ms_since_poll=int((time.monotonic() - self._last_poll) * 1000),
            )
            if joining or self._topics_changed:
                request.topics.extend(self.topics)
                self._topics_changed = False
            if joining:
                request.assignor = config.assignor
                request.session_timeout_ms = config.session_timeout_ms
                request.rebalance_timeout_ms = config.max_poll_interval_ms
            else:
                for topic, partition in self._owned:
                    request.owned.add(topic=topic, partition=partition)
        response = self._stub.GroupHeartbeat(request, timeout=self._timeout)
        assignment = frozenset(TopicPartition(tp.topic, tp.partition) for tp in response.assignment)
        with self.lock:
            if joining:
                log.info("group %s: joined as %s (epoch %d)", self.group_id, response.member_id,
                         response.member_epoch)
            self.member_id = response.member_id
            self.member_epoch = response.member_epoch
            self._interval = max(response.heartbeat_interval_ms, 10) / 1000.0
            if assignment != self._last_assignment:
                self._last_assignment = assignment
                self.target = assignment
                self.changed.set()

    def _rejoin(self, error: LogstoreError) -> None:
        with self.lock:
            log.warning("group %s: member %s must rejoin: %s", self.group_id, self.member_id,
                        error.message)
            if self.member_epoch != JOIN_EPOCH:
                self.lost = True
                self.generation += 1
            self.member_id = ""
            self.member_epoch = JOIN_EPOCH
            self.target = None
            self._last_assignment = None
            self.changed.set()


# -- offsets -------------------------------------------------------------------------------------


def commit_request(metadata: GroupMetadata,
                   offsets: Mapping[TopicPartition, int]) -> groups_pb2.CommitOffsetsRequest:
    request = groups_pb2.CommitOffsetsRequest(
        group_id=metadata.group_id, member_id=metadata.member_id,
        member_epoch=metadata.member_epoch,
    )
    for (topic, partition), offset in offsets.items():
        request.offsets.add(topic=topic, partition=partition, offset=offset)
    return request


def commit_result(response: groups_pb2.CommitOffsetsResponse,
                  offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """The committed offsets; the first partition's error raises, typed."""
    for result in response.results:
        if result.HasField("error") and result.error.reason:
            raise error_from_detail(result.error)
    return dict(offsets)


def commit_future(call: Any, offsets: Mapping[TopicPartition, int],
                  server: str) -> Future[dict[TopicPartition, int]]:
    """A ``concurrent.futures.Future`` of an asynchronous commit (a gRPC future underneath)."""
    future: Future[dict[TopicPartition, int]] = Future()
    offsets = dict(offsets)

    def done(call_future: Any) -> None:
        try:
            future.set_result(commit_result(call_future.result(), offsets))
        except grpc.RpcError as exc:
            future.set_exception(error_from_rpc(exc, server))
        except LogstoreError as exc:
            future.set_exception(exc)
        except Exception as exc:  # cancelled
            future.set_exception(exc)

    call.add_done_callback(done)
    return future


def fetch_committed(
    stub: Any, server: str, group_id: str, partitions: Iterable[TopicPartition],
    config: ConsumerConfig, *, require_stable: bool = False,
) -> dict[TopicPartition, int | None]:
    """Committed offsets (None where nothing is committed). With ``require_stable``, waits while
    a transaction holds an offset commit of these partitions (UNSTABLE_OFFSET_COMMIT), for up to
    ``request_timeout_ms``."""
    wanted = list(partitions)
    if not wanted:
        return {}
    request = groups_pb2.FetchOffsetsRequest(group_id=group_id, require_stable=require_stable)
    for topic, partition in wanted:
        request.partitions.add(topic=topic, partition=partition)
    timeout = config.request_timeout_ms / 1000.0
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            response = call_with_retries(
                lambda: stub.FetchOffsets(request, timeout=timeout),
                server=server, retries=config.retries, retry_backoff_ms=config.retry_backoff_ms,
                retry_backoff_max_ms=config.retry_backoff_max_ms,
            )
            break
        except LogstoreError as exc:
            attempt += 1
            if exc.reason != "UNSTABLE_OFFSET_COMMIT" or time.monotonic() > deadline:
                raise
            time.sleep(backoff_seconds(attempt, 20.0, 500.0))
    committed: dict[TopicPartition, int | None] = {}
    for item in response.offsets:
        if item.HasField("error") and item.error.reason:
            raise error_from_detail(item.error)
        tp = TopicPartition(item.topic, item.partition)
        committed[tp] = item.offset if item.offset >= 0 else None
    return committed
