"""Producer id blocks reserved from etcd (logstore/cluster/producer_ids.py) against a real etcd:
brokers racing for blocks never get overlapping ones."""

from __future__ import annotations

import asyncio

from logstore.broker.producer_ids import ProducerIdPool
from logstore.cluster.etcd import EtcdClient
from logstore.cluster.producer_ids import FIRST_PRODUCER_ID, ProducerIdBlocks
from tests.cluster.etcd_fixture import EtcdCluster

KEY = "/logstore/test/producer_id_block"
BLOCK = 5


def test_brokers_racing_for_blocks_hand_out_every_id_once(etcd: EtcdCluster) -> None:
    async def take_all(client: EtcdClient, broker_id: int, count: int) -> list[int]:
        blocks = ProducerIdBlocks(client, KEY, broker_id, ProducerIdPool(), block_size=BLOCK)
        ids = []
        for _ in range(count):
            await blocks.ensure()
            ids.append(blocks.pool.take())
        return ids

    async def main() -> list[list[int]]:
        clients = [EtcdClient(etcd.endpoints) for _ in range(3)]
        try:
            return await asyncio.gather(*(take_all(c, i, 4 * BLOCK + 2) for i, c in enumerate(clients)))
        finally:
            for client in clients:
                await client.close()

    per_broker = asyncio.run(asyncio.wait_for(main(), 30))
    every = sorted(i for ids in per_broker for i in ids)
    assert len(every) == len(set(every)) == 3 * (4 * BLOCK + 2)
    assert every[0] >= FIRST_PRODUCER_ID
    blocks_used = {(i - FIRST_PRODUCER_ID) // BLOCK for i in every}
    assert len(blocks_used) == 3 * 5  # each broker used 5 blocks of its own, none shared
