"""The logstore client role of the cluster benchmark, run in an agent process
(``bench.peers.agent``, system ``cluster``).

``produce``: one ``logstore.client.Producer(server=<a partition leader's address>, acks=...)``
with the client's other defaults (1 MiB batches, ``linger_ms=5``, up to 5 requests in flight on
one produce stream; idempotent with ``acks="all"``) sends ``send_batch`` of a 2-D uint8 array to
each partition that broker leads (an explicit ``partition``), then waits for every
acknowledgement. The clock runs from the first ``send_batch`` to the last acknowledgement.

Before the clock starts, the producer sends one record (``PRIME``) to each of its partitions and
waits for it: that fetches the metadata and the producer id, and makes sure the followers of a
partition created just before the run are already fetching it (a follower adds a new partition
to its fetch only once its current long poll returns, up to ``replica_fetch_max_wait_ms``, so the
first ``acks=all`` produce to a new partition can wait that long). A consumer of the topic
therefore finds one record more per partition.

Consumers reuse the side-by-side benchmark's role (``bench.peers.logstore_runner.consume``,
``assign`` + ``poll_columns``) with ``server`` set to the leader of the partitions they read;
NATS publishers and consumers reuse ``bench.peers.nats_runner``'s, pointed at one node each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.peers.clock import Timer
from bench.peers.records import value_rows

Barrier = Callable[[], None]
PRIME = b"prime"


def produce(spec: dict[str, Any], barrier: Barrier) -> dict[str, Any]:
    from logstore.client import Producer

    topic = spec["topic"]
    parts = [(partition, value_rows(start, stop, spec["size"], spec["seed"]))
             for partition, start, stop in spec["parts"]]
    timer = Timer()
    with Producer(spec["server"], acks=spec["acks"]) as producer:
        for partition, _ in parts:
            producer.send(topic, PRIME, partition=partition)
        producer.flush()
        barrier()
        timer.start()
        futures = [producer.send_batch(topic, rows, partition=partition)
                   for partition, rows in parts]
        for future in futures:
            future.result()
        timer.stop()
    return timer.result(sum(len(rows) for _, rows in parts))


ROLES = {"produce": produce}
