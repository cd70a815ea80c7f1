"""The consumer's group side: committing offsets, auto-commit, and applying assignments.

``Membership`` (``group``) heartbeats in its own thread and leaves each new assignment for the
consumer; ``ConsumerGroup`` applies it in the consumer's thread, inside ``poll()``
(``reconcile``): revoked partitions get ``on_revoke``, then an auto-commit, then are dropped;
added ones start at the group's committed offset (else ``auto_offset_reset``) and get
``on_assign``; after an eviction ``on_lost`` runs and nothing is committed. With ``assign``
instead of ``subscribe`` a consumer still reads and commits the group's offsets (a standalone
consumer; the broker accepts that while the group has no members).

It holds no partitions itself: it reads and changes the consumer's ``Fetcher``.

Thread-safety: none; the consumer's thread owns it (``Membership`` locks what its thread shares).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from logstore.client.channel import call_with_retries
from logstore.client.config import ConsumerConfig
from logstore.client.fetcher import Fetcher
from logstore.client.group import (
    Membership,
    commit_future,
    commit_request,
    commit_result,
    fetch_committed,
)
from logstore.client.models import GroupMetadata, TopicPartition
from logstore.errors import InvalidRequestError, LogstoreError, UnknownMemberError

#: ``on_assign``, ``on_revoke`` and ``on_lost`` get the partitions, sorted.
RebalanceCallback = Callable[[list[TopicPartition]], object]

log = logging.getLogger("logstore.client")


class ConsumerGroup:
    """The group ``group_id`` (None: no group; commits are refused) as one consumer sees it."""

    def __init__(self, config: ConsumerConfig, server: str, stub: Any) -> None:
        self.config = config
        self.group_id = config.group_id
        self.membership: Membership | None = None
        #: Set by the consumer right after: the partitions this group side reads and changes.
        self.fetcher: Fetcher | None = None
        self._server = server
        self._stub = stub
        self._timeout = config.request_timeout_ms / 1000.0
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        self.auto_commit = bool(self.group_id) and config.enable_auto_commit
        self._last_auto_commit = time.monotonic()
        #: What the consumer last committed per partition (an auto-commit skips unchanged ones).
        self._committed: dict[TopicPartition, int] = {}
        #: The membership generation the partitions held belong to, and the member identity
        #: the last poll saw in it (see ``identity``).
        self._generation = 0
        self._metadata: GroupMetadata | None = None

    @property
    def _fetcher(self) -> Fetcher:
        assert self.fetcher is not None
        return self.fetcher

    def subscribe(self, names: list[str], on_assign: RebalanceCallback | None,
                  on_revoke: RebalanceCallback | None, on_lost: RebalanceCallback | None) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        if self.membership is not None:
            self.membership.subscribe(names)
            return
        if self._fetcher.states:
            raise InvalidRequestError("the consumer has assigned partitions: assign() and "
                                      "subscribe() do not mix")
        assert self.group_id
        self.membership = Membership(self._stub, self._server, self.group_id, self.config, names)
        self._fetcher.membership = self.membership
        self.membership.start()

    def group_metadata(self) -> GroupMetadata:
        if not self.group_id:
            raise InvalidRequestError("the consumer has no group_id", field="group_id")
        if self.membership is None:
            return GroupMetadata(self.group_id, "", 0)
        generation, metadata = self.membership.snapshot()
        if generation != self._generation and self._metadata is not None:
            return self._metadata  # lost since the last poll: the broker will refuse it
        return metadata

    def identity(self) -> GroupMetadata:
        """Who commits: the member the partitions held were assigned to. If the membership was
        lost since (the heartbeat thread may already have rejoined under a new id), committing
        them is refused here: they may have been someone else's meanwhile."""
        group_id = self.require()
        if self.membership is None:
            return GroupMetadata(group_id, "", 0)
        generation, metadata = self.membership.snapshot()
        if generation != self._generation:
            stale = self._metadata or metadata
            raise UnknownMemberError(group_id, stale.member_id)
        return metadata

    def require(self) -> str:
        if not self.group_id:
            raise InvalidRequestError("committing needs a consumer with a group_id",
                                      field="group_id")
        return self.group_id

    # -- committing ------------------------------------------------------------------------------

    def commit(
        self, offsets: Mapping[TopicPartition, int] | None, asynchronous: bool
    ) -> dict[TopicPartition, int] | Future[dict[TopicPartition, int]]:
        self.require()
        chosen = dict(offsets) if offsets is not None else self._fetcher.position_offsets()
        chosen = {TopicPartition(*tp): int(offset) for tp, offset in chosen.items()}
        if not chosen:
            if asynchronous:
                done: Future[dict[TopicPartition, int]] = Future()
                done.set_result({})
                return done
            return {}
        request = commit_request(self.identity(), chosen)
        if asynchronous:
            future = commit_future(
                self._stub.CommitOffsets.future(request, timeout=self._timeout),
                chosen, self._server)
            future.add_done_callback(lambda f: self._note_committed(f, chosen))
            return future
        config = self.config
        response = call_with_retries(
            lambda: self._stub.CommitOffsets(request, timeout=self._timeout),
            server=self._server, retries=config.retries, retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
        )
        committed = commit_result(response, chosen)
        self._committed.update(committed)
        return committed

    def _note_committed(self, future: Future[dict[TopicPartition, int]],
                        offsets: dict[TopicPartition, int]) -> None:
        if future.exception() is None:
            self._committed.update(offsets)

    def committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        return fetch_committed(self._stub, self._server, self.require(), partitions, self.config)

    def initial_positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where partitions without a position start before ``auto_offset_reset`` applies: the
        group's committed offsets (read_committed waits for pending transactional commits)."""
        if not self.group_id:
            return {}
        committed = fetch_committed(
            self._stub, self._server, self.group_id, partitions, self.config,
            require_stable=self.config.isolation_level == "read_committed",
        )
        found = {tp: offset for tp, offset in committed.items() if offset is not None}
        self._committed.update(found)
        return found

    def auto_commit_now(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the positions that changed (of ``partitions``, default all held); errors are
        logged, not raised (the records will be delivered again)."""
        positions = self._fetcher.position_offsets()
        if partitions is not None:
            wanted = set(partitions)
            positions = {tp: o for tp, o in positions.items() if tp in wanted}
        changed = {tp: o for tp, o in positions.items() if self._committed.get(tp) != o}
        self._last_auto_commit = time.monotonic()
        if not changed:
            return
        try:
            self.commit(changed, False)
        except LogstoreError as exc:
            log.warning("group %s: auto-commit of %d partitions failed: %s", self.group_id,
                        len(changed), exc.message)

    # -- rebalancing -----------------------------------------------------------------------------

    def poll(self) -> None:
        """The group's part of every poll: auto-commit when due, then apply assignment changes."""
        membership = self.membership
        if self.auto_commit and self._fetcher.states and (
            time.monotonic() - self._last_auto_commit >= self.config.auto_commit_interval_ms / 1000
        ):
            self.auto_commit_now()
        if membership is not None:
            membership.polled()
            if membership.changed.is_set():
                self.reconcile(membership)
            generation, metadata = membership.snapshot()
            if generation == self._generation:
                self._metadata = metadata

    def reconcile(self, membership: Membership) -> None:
        fetcher = self._fetcher
        generation, lost, target, error = membership.take()
        if error is not None:
            raise error
        if lost:
            partitions = sorted(fetcher.states)
            self._generation = generation
            if partitions:
                log.warning("group %s: lost %d partitions", self.group_id, len(partitions))
                self._drop(partitions)
                membership.set_owned(())
                if self._on_lost is not None:
                    self._on_lost(partitions)
        if target is None:
            return
        current, metadata = membership.snapshot()
        if current == self._generation:
            self._metadata = metadata
        revoked = sorted(set(fetcher.states) - target)
        added = sorted(target - set(fetcher.states))
        if revoked:
            if self._on_revoke is not None:
                self._on_revoke(revoked)
            if self.auto_commit:
                self.auto_commit_now(revoked)
            self._drop(revoked)
            membership.set_owned(fetcher.states)
            membership.wake()  # tell the broker now: the new owner is waiting
        if added:
            fetcher.add(added)
            membership.set_owned(fetcher.states)
            if self._on_assign is not None:
                self._on_assign(added)

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = list(partitions)
        self._fetcher.drop(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)

    def close(self) -> None:
        """``on_revoke`` for every partition held and a last auto-commit, then leave."""
        states = self._fetcher.states
        try:
            if self.membership is not None and states and self._on_revoke is not None:
                self._on_revoke(sorted(states))
            if self.auto_commit and states:
                self.auto_commit_now()
        finally:
            if self.membership is not None:
                self.membership.stop()
