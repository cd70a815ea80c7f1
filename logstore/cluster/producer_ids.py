"""Producer id blocks of a cluster, reserved from one counter in etcd (Kafka's
``/latest_producer_id_block``).

The key ``<prefix>producer_id_block`` holds the last block handed to a broker, as JSON
``{"broker_id", "start", "end"}``. A broker reserves the next block [end, end + BLOCK_SIZE) with a
transaction guarded by the key's mod revision (created when absent); when another broker won the
race, the failed transaction's get returns the newer block and the broker tries again from it. A
reservation whose answer was lost may still have been applied: retrying reserves another block
and the lost one is never used, so no id is ever handed out twice. The first block starts at
``FIRST_PRODUCER_ID``, above every id a single node or the earlier per-broker scheme
(``broker_id << 32``) handed out, so a data directory's producer states stay unambiguous.

Threading: event loop thread only; one reservation at a time (an asyncio lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from logstore.broker.producer_ids import ProducerIdPool
from logstore.cluster.etcd import Compare, EtcdError, Op
from logstore.errors import MetadataUnavailableError

log = logging.getLogger(__name__)

#: Ids per reservation: one etcd transaction per this many InitProducerId calls at most.
BLOCK_SIZE = 1000
FIRST_PRODUCER_ID = 1 << 48
#: Reservations lost to other brokers in a row before giving up (the client retries).
MAX_ATTEMPTS = 20


class ProducerIdBlocks:
    def __init__(self, etcd: Any, key: str, broker_id: int, pool: ProducerIdPool,
                 block_size: int = BLOCK_SIZE) -> None:
        self.etcd = etcd
        self.block_size = block_size
        self.key = key
        self.broker_id = broker_id
        self.pool = pool
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Make sure the pool holds at least one id (reserving a block from etcd if not);
        ``MetadataUnavailableError`` when etcd cannot be reached."""
        if self.pool.left() > 0:
            return
        async with self._lock:
            if self.pool.left() > 0:
                return
            try:
                start, end = await self._reserve()
            except EtcdError as exc:
                raise MetadataUnavailableError(
                    f"cannot reserve producer ids: the metadata store is unavailable ({exc})"
                ) from exc
            self.pool.add_block(start, end)
            log.info("reserved producer ids [%d, %d)", start, end,
                     extra={"producer_id_start": start, "producer_id_end": end})

    async def _reserve(self) -> tuple[int, int]:
        current = await self.etcd.get(self.key)
        for _ in range(MAX_ATTEMPTS):
            if current is None:
                start, guard = FIRST_PRODUCER_ID, Compare.create_revision(self.key) == 0
            else:
                start = int(json.loads(current.value)["end"])
                guard = Compare.mod_revision(self.key) == current.mod_revision
            end = start + self.block_size
            value = json.dumps({"broker_id": self.broker_id, "start": start, "end": end})
            result = await self.etcd.txn([guard], [Op.put(self.key, value)], [Op.get(self.key)])
            if result.succeeded:
                return start, end
            kvs = result.responses[0].kvs if result.responses else ()
            current = kvs[0] if kvs else None
        raise MetadataUnavailableError(
            f"cannot reserve producer ids: {MAX_ATTEMPTS} reservations in a row lost to other brokers"
        )
