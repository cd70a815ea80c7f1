"""The controller: one broker, elected through etcd, that decides every partition's leader.

Election: each broker campaigns by creating the ``controller`` key under its membership lease in
one etcd transaction (create revision 0 -> put). The winner's epoch is the key's create
revision; every write it makes compares that revision, so a controller that lost its lease (and
so its key) can change nothing even if it does not know yet. The losers wait for the key to go.

What it decides (``reconcile``, run on every metadata change and once a second):

- a missing replicated internal topic (``__consumer_offsets``) is created once 3 brokers are live
  (``internal_topics.py``);
- a new topic's partitions get their first state: the first live replica of the assignment leads,
  the ISR is the live replicas, leader epoch 1 (0 is a single node's);
- a partition whose leader is dead (lease expired) or shutting down gets a new leader from its
  ISR (live, not shutting down, in assignment order), the leader epoch bumped, the ISR shrunk to
  live members; with no such replica the partition is offline (leader -1), unless the topic allows
  unclean leader election, which picks any live replica and may lose acknowledged records;
- a state partition of share groups (``__share_state.<topic>``/p, see
  ``broker/share/leadership.py``) is led by its data partition's leader whenever that broker is
  eligible and in the state partition's ISR: its elections prefer it, and a state partition led
  elsewhere is moved to it (leader epoch bumped), so a share-partition is served where its
  records are led;
- dead or shutting-down followers leave the ISR (so acks=all does not wait replica_lag_time_ms for
  them);
- a broker that started again since a partition's state was written (its key's create revision
  is newer) may have lost its unsynced tail: it leaves the ISR until it has caught up, and a
  partition it led gets another ISR member as leader — or, if none, is granted to it again at a
  new epoch (the broker itself leads only under a grant newer than its registration).

Every change is a guarded transaction (controller epoch and the partition key's mod revision), so a
retry after a lost answer, or a write racing a leader's ISR change, is harmless: the loser re-reads
and decides again.

Threading: event loop thread only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from logstore.broker.share.leadership import data_topic
from logstore.cluster.etcd import Compare, Op
from logstore.cluster.internal_topics import INTERNAL_REPLICATION_FACTOR, ensure_internal_topics
from logstore.cluster.metadata import MetadataCache
from logstore.cluster.records import Keys, PartitionState

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 1.0


class Controller:
    def __init__(self, etcd: Any, keys: Keys, metadata: MetadataCache, broker_id: int,
                 internal_topics: dict[str, int] | None = None) -> None:
        self.etcd = etcd
        #: replicated internal topics (name -> partitions) created when missing
        self.internal_topics = internal_topics or {}
        self.keys = keys
        self.metadata = metadata
        self.broker_id = broker_id
        self.epoch = 0  # > 0 while this broker is the controller
        self.lease_id = 0
        self.elections = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        metadata.listeners.append(self._changed.set)

    @property
    def active(self) -> bool:
        return self.epoch > 0

    def start(self, lease_id: int) -> None:
        self.lease_id = lease_id
        self._task = asyncio.get_running_loop().create_task(self._run())

    def new_lease(self, lease_id: int) -> None:
        """The membership lease was renewed under a new id: campaign with it."""
        self.lease_id = lease_id
        self.epoch = 0
        self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.epoch = 0

    async def _run(self) -> None:
        value = json.dumps({"broker_id": self.broker_id}).encode()
        while True:
            try:
                current = self.metadata.controller
                if current is not None and current[0] == self.broker_id and current[1] != self.epoch:
                    # our key from an earlier term (same lease): it is ours to use
                    self.epoch = current[1]
                if not self.active and (current is None or current[0] == self.broker_id) and self.lease_id:
                    won = await self.etcd.campaign(self.keys.controller, value, self.lease_id)
                    if won:
                        self.epoch = int(won)
                        self.elections += 1
                        log.info("elected controller", extra={"controller_epoch": self.epoch})
                if self.active:
                    held = self.metadata.controller
                    if held is not None and held[1] != self.epoch:
                        log.warning("no longer the controller (epoch %d, now %s)", self.epoch, held)
                        self.epoch = 0
                    else:
                        await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("controller step failed: %s", exc)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), RECONCILE_INTERVAL_S)
            except TimeoutError:
                pass

    async def reconcile(self) -> None:
        metadata = self.metadata
        await ensure_internal_topics(self.etcd, self.keys, metadata, self.internal_topics,
                                     min_live=INTERNAL_REPLICATION_FACTOR)
        live = metadata.live_brokers()
        eligible = {b for b, record in metadata.brokers.items() if not record.shutting_down}
        for name, topic in list(metadata.topics.items()):
            source = data_topic(name)
            for partition, assigned in enumerate(topic.assignment):
                entry = metadata.partitions.get((name, partition))
                preferred = None
                if source is not None:
                    data_state = metadata.state(source, partition)
                    preferred = data_state.leader if data_state is not None else None
                if entry is None:
                    leader = next((b for b in assigned if b in eligible), -1)
                    if preferred in eligible and preferred in assigned:
                        leader = preferred
                    if leader < 0:
                        leader = next((b for b in assigned if b in live), -1)
                    isr = tuple(b for b in assigned if b in live) or tuple(assigned[:1])
                    # leader epochs start at 1: epoch 0 is a single node's (no epoch cache entry)
                    await self._write(name, partition, PartitionState(leader, 1, isr, self.epoch), None)
                    continue
                state, mod_revision = entry
                # brokers that started again since this state was written: their copy may have
                # lost its unsynced tail, so they lead again only after a new grant, and rejoin
                # the ISR only after catching up
                restarted = {
                    b for b, record in metadata.brokers.items() if record.registered_revision > mod_revision
                }
                new = self._decide(state, assigned, live, eligible - restarted, topic.unclean_leader_election,
                                   restarted, preferred)
                if new is not None and new != state:
                    await self._write(name, partition, new, mod_revision)
                if not self.active:
                    return

    def _decide(self, state: PartitionState, assigned: list[int], live: set[int], eligible: set[int],
                unclean: bool, restarted: set[int], preferred: int | None = None) -> PartitionState | None:
        """``preferred``: the broker to lead whenever it is eligible and in the ISR (a state
        partition's data leader)."""
        if state.leader in eligible:
            isr = tuple(b for b in state.isr if b in eligible or b == state.leader)
            if preferred is not None and preferred != state.leader and preferred in isr and preferred in eligible:
                return PartitionState(preferred, state.leader_epoch + 1, isr, self.epoch)
            if isr != state.isr:
                return PartitionState(state.leader, state.leader_epoch, isr, self.epoch)
            return None
        # the leader is dead, restarted, shutting down, or there is none: elect from the ISR
        candidates = [b for b in assigned if b in state.isr and b in eligible and b != state.leader]
        if preferred in candidates:
            candidates.remove(preferred)
            candidates.insert(0, preferred)
        if not candidates and state.leader in live:
            if state.leader in restarted:  # nobody else can lead: grant it again, fenced by epoch
                return PartitionState(state.leader, state.leader_epoch + 1, state.isr, self.epoch)
            return None  # shutting down but nobody can take over: it keeps leading
        if not candidates and unclean:
            candidates = [b for b in assigned if b in eligible]
            if candidates:
                log.warning("unclean leader election: broker %d was not in the ISR %s",
                            candidates[0], list(state.isr))
        if not candidates:
            if state.leader == -1:
                return None
            log.warning("no in-sync replica is alive: the partition goes offline (ISR %s)", list(state.isr))
            return PartitionState(-1, state.leader_epoch + 1, state.isr, self.epoch)
        leader = candidates[0]
        if leader in state.isr:
            isr = tuple(b for b in state.isr if b in eligible)
        else:
            isr = (leader,)
        return PartitionState(leader, state.leader_epoch + 1, isr, self.epoch)

    async def _write(self, topic: str, partition: int, state: PartitionState, mod_revision: int | None) -> None:
        key = self.keys.partition(topic, partition)
        compares = [Compare.create_revision(self.keys.controller) == self.epoch]
        if mod_revision is None:
            compares.append(Compare.create_revision(key) == 0)
        else:
            compares.append(Compare.mod_revision(key) == mod_revision)
        result = await self.etcd.txn(compares, [Op.put(key, state.encode())], [Op.get(self.keys.controller)])
        if result.succeeded:
            log.info("%s/%d: leader %d, epoch %d, isr %s", topic, partition, state.leader,
                     state.leader_epoch, list(state.isr))
            return
        held = self.metadata.controller
        kvs = result.responses[0].kvs if result.responses else ()  # the failure branch's get
        if not kvs or kvs[0].create_revision != self.epoch:
            log.warning("deposed as controller (epoch %d; the key is now %s)", self.epoch, held)
            self.epoch = 0

