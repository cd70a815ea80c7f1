"""The paths a user has today to get a stream range into a DataFrame, beside logstore's.

- **Redis Streams**: ``XADD key * v <value>`` (pipelined, 1,000 per round trip) to fill;
  read with ``XRANGE key (last + COUNT 1000`` from the start, the ids and values collected in
  lists, then ``pandas.DataFrame({"id": ..., "value": ...})``.
- **NATS JetStream**: ``publish`` (acknowledged in windows of 1,000) to fill one stream; read
  with a pull consumer (``AckPolicy.NONE``) ``fetch(batch=1000)`` until every message arrived,
  sequence numbers and data collected, then a DataFrame of them.

The servers are the peers suite's (``bench.peers.servers``): started here, removed afterwards.
Only the read into the DataFrame is timed; each timed run reads the whole stream again.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers.servers import Servers, child_env, ensure_installed

PAGE = 1_000


class Peers:
    """Redis and NATS servers for one frames run."""

    def __init__(self) -> None:
        ensure_installed(["redis-server", "nats-server"])
        self._root = tempfile.mkdtemp(prefix="logstore-bench-frames-")
        self._servers = Servers(Path(self._root), child_env())
        self.redis = self._servers.start_redis()
        self.nats = self._servers.start_nats()

    def close(self) -> None:
        self._servers.stop_all()

    # -- Redis -------------------------------------------------------------------------------------

    def fill_redis(self, key: str, values: np.ndarray) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis.port)
        try:
            for first in range(0, len(values), PAGE):
                pipe = client.pipeline(transaction=False)
                for row in values[first : first + PAGE]:
                    pipe.xadd(key, {"v": row.tobytes()})
                pipe.execute()
        finally:
            client.close()

    def redis_frame(self, key: str, count: int) -> float:
        """Seconds to read ``key`` whole into a pandas DataFrame."""
        import pandas as pd
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis.port)
        try:
            start = time.perf_counter()
            ids: list[bytes] = []
            values: list[bytes] = []
            low: Any = "-"
            while len(ids) < count:
                entries = client.xrange(key, min=low, count=PAGE)
                if not entries:
                    break
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    values.append(fields[b"v"])
                low = b"(" + entries[-1][0]
            frame = pd.DataFrame({"id": ids, "value": values})
            elapsed = time.perf_counter() - start
        finally:
            client.close()
        if len(frame) != count:
            raise RuntimeError(f"Redis gave {len(frame)} of {count} entries")
        return elapsed

    # -- JetStream ---------------------------------------------------------------------------------

    def fill_nats(self, stream: str, values: np.ndarray) -> None:
        async def main() -> None:
            import nats

            nc = await nats.connect(f"nats://127.0.0.1:{self.nats.port}")
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[f"{stream}.v"])
            for first in range(0, len(values), PAGE):
                acks = [await js.publish_async(f"{stream}.v", row.tobytes())
                        for row in values[first : first + PAGE]]
                await asyncio.gather(*acks)
            await nc.close()

        asyncio.run(main())

    def nats_frame(self, stream: str, count: int, run: int) -> float:
        async def main() -> float:
            import nats
            import pandas as pd
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            nc = await nats.connect(f"nats://127.0.0.1:{self.nats.port}")
            js = nc.jetstream()
            subscription = await js.pull_subscribe(
                f"{stream}.v", durable=f"reader-{run}", stream=stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
            start = time.perf_counter()
            sequences: list[int] = []
            values: list[bytes] = []
            while len(values) < count:
                for message in await subscription.fetch(batch=PAGE, timeout=5):
                    sequences.append(message.metadata.sequence.stream)
                    values.append(message.data)
            frame = pd.DataFrame({"sequence": sequences, "value": values})
            elapsed = time.perf_counter() - start
            await nc.close()
            if len(frame) != count:
                raise RuntimeError(f"JetStream gave {len(frame)} of {count} messages")
            return elapsed

        return asyncio.run(main())
