"""The broker: topics, partitions, produce, fetch, groups, producer state, transactions.

No gRPC here: ``logstore.server`` is the one place gRPC meets the broker.
"""

from logstore.broker.broker import Broker
from logstore.broker.config import BrokerConfig
from logstore.broker.types import (
    AbortedTransaction,
    Acks,
    FetchItem,
    FetchOutcome,
    Isolation,
    ListedOffset,
    ListOffsetsItem,
    OffsetSpec,
    ProduceItem,
    ProduceOutcome,
    StartPosition,
)

__all__ = [
    "AbortedTransaction",
    "Acks",
    "Broker",
    "BrokerConfig",
    "FetchItem",
    "FetchOutcome",
    "Isolation",
    "ListOffsetsItem",
    "ListedOffset",
    "OffsetSpec",
    "ProduceItem",
    "ProduceOutcome",
    "StartPosition",
]
