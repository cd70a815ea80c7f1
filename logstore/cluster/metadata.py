"""This broker's view of the cluster's metadata: etcd's keys under the cluster prefix, loaded once
and then kept current by a watch (resumed from the last revision seen; reloaded whole when etcd
compacted past it).

Readers get plain dicts of the records in ``records.py``; ``listeners`` are called (on the event
loop) after every batch of changes, so the replica manager and the controller react to leader
changes, new topics and broker deaths as soon as etcd has them.

Locking: event loop thread only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from logstore.cluster.etcd import EtcdCompactedError, EventType
from logstore.cluster.records import BrokerRecord, Keys, PartitionState, TopicRecord

log = logging.getLogger(__name__)

#: How long the watch waits before resuming after etcd failed it.
WATCH_RETRY_S = 0.2


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes | bytearray) else str(key)


class MetadataCache:
    def __init__(self, etcd: Any, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self.brokers: dict[int, BrokerRecord] = {}
        self.topics: dict[str, TopicRecord] = {}
        #: (topic, partition) -> (state, mod revision of its key)
        self.partitions: dict[tuple[str, int], tuple[PartitionState, int]] = {}
        #: (broker id, create revision = epoch), or None while no controller is elected.
        self.controller: tuple[int, int] | None = None
        #: share group -> its config (a JSON document, see ``broker/share/config.py``)
        self.share_configs: dict[str, dict[str, object]] = {}
        self.revision = 0
        self.listeners: list[Callable[[], None]] = []
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _load(self) -> None:
        kvs, revision = await self.etcd.get_prefix(self.keys.prefix)
        self.brokers.clear()
        self.topics.clear()
        self.partitions.clear()
        self.share_configs.clear()
        self.controller = None
        for kv in kvs:
            self._put(_text(kv.key), kv)
        self.revision = revision
        self.loaded.set()
        self._notify()

    async def _watch(self) -> None:
        while True:
            try:
                async for event in self.etcd.watch_prefix(self.keys.prefix, self.revision + 1):
                    key = _text(event.kv.key)
                    if event.type is EventType.DELETE:
                        self._delete(key)
                    else:
                        self._put(key, event.kv)
                    self.revision = max(self.revision, event.revision)
                    self._notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, EtcdCompactedError):
                    log.warning("metadata watch fell behind etcd's compaction; reloading")
                    try:
                        await self._load()
                    except Exception as again:
                        log.warning("reloading metadata failed: %s", again)
                else:
                    log.warning("metadata watch failed (%s); resuming at revision %d", exc, self.revision + 1)
            await asyncio.sleep(WATCH_RETRY_S)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("metadata listener failed")

    # -- applying keys ---------------------------------------------------------------------------

    def _put(self, key: str, kv: Any) -> None:
        k = self.keys
        try:
            if key.startswith(k.brokers):
                broker_id = int(key[len(k.brokers):])
                self.brokers[broker_id] = BrokerRecord.decode(broker_id, kv.value, int(kv.create_revision))
            elif key == k.controller:
                self.controller = (int(json.loads(kv.value)["broker_id"]), int(kv.create_revision))
            elif key.startswith(k.topics):
                name = key[len(k.topics):]
                self.topics[name] = TopicRecord.decode(name, kv.value)
            elif key.startswith(k.partitions):
                topic, _, partition = key[len(k.partitions):].rpartition("/")
                self.partitions[(topic, int(partition))] = (PartitionState.decode(kv.value), int(kv.mod_revision))
            elif key.startswith(k.share_groups):
                self.share_configs[key[len(k.share_groups):]] = dict(json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable metadata key %s: %s", key, exc)

    def _delete(self, key: str) -> None:
        k = self.keys
        if key.startswith(k.brokers):
            self.brokers.pop(int(key[len(k.brokers):]), None)
        elif key == k.controller:
            self.controller = None
        elif key.startswith(k.topics):
            self.topics.pop(key[len(k.topics):], None)
        elif key.startswith(k.partitions):
            topic, _, partition = key[len(k.partitions):].rpartition("/")
            self.partitions.pop((topic, int(partition)), None)
        elif key.startswith(k.share_groups):
            self.share_configs.pop(key[len(k.share_groups):], None)

    # -- reading ---------------------------------------------------------------------------------

    def live_brokers(self) -> set[int]:
        return set(self.brokers)

    def state(self, topic: str, partition: int) -> PartitionState | None:
        entry = self.partitions.get((topic, partition))
        return entry[0] if entry else None

    def address(self, broker_id: int) -> str | None:
        record = self.brokers.get(broker_id)
        return record.address if record else None

    def replica_address(self, broker_id: int) -> str:
        """The broker's replica data channel ("" if it has none or is unknown)."""
        record = self.brokers.get(broker_id)
        return record.replica_address if record else ""

