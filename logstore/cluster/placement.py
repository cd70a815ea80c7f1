"""Where a new topic's replicas go: spread over the live brokers, leaders spread evenly.

Partition ``p`` of a topic gets the brokers at positions ``start + p, start + p + 1, ...`` (mod the
number of brokers) of the sorted live broker ids, the first being its preferred leader; ``start``
depends on the topic name, so that many small topics do not all put their first leader on the same
broker. A pure function: the caller supplies the live brokers.
"""

from __future__ import annotations

import zlib

from logstore.errors import InvalidConfigError


def assign_replicas(topic: str, partitions: int, replication_factor: int, brokers: list[int]) -> list[list[int]]:
    live = sorted(brokers)
    if replication_factor < 1:
        raise InvalidConfigError(
            f"replication_factor must be at least 1, not {replication_factor}",
            key="replication_factor", value=replication_factor,
        )
    if replication_factor > len(live):
        raise InvalidConfigError(
            f"replication_factor={replication_factor} needs as many live brokers; {len(live)} are live",
            key="replication_factor", value=replication_factor,
        )
    start = zlib.crc32(topic.encode()) % len(live)
    return [
        [live[(start + p + k) % len(live)] for k in range(replication_factor)] for p in range(partitions)
    ]
