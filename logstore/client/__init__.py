"""The logstore Python client: ``Producer``, ``Consumer`` and ``Admin``, over gRPC.

::

    from logstore import Admin, Consumer, Producer, TopicPartition

    with Admin("127.0.0.1:7070") as admin:
        admin.create_topic("events", partitions=3)
    with Producer("127.0.0.1:7070") as producer:
        producer.send("events", b"hello", key=b"user-1")
        producer.send_batch("events", [b"a", b"b", b"c"], partition=0)
    with Consumer("127.0.0.1:7070", auto_offset_reset="earliest") as consumer:
        consumer.assign("events")
        for record in consumer.poll(timeout=1.0):
            print(record.partition, record.offset, record.value)

Importing the client tunes glibc malloc once (see ``malloc``) so ~1 MiB buffers stay on the heap,
in one arena, and are reused without page faults.
"""

from logstore.client.malloc import tune_malloc

tune_malloc()

from logstore.client.admin import Admin  # noqa: E402
from logstore.client.aio import AsyncAdmin, AsyncConsumer, AsyncProducer  # noqa: E402
from logstore.client.batch import RecordFuture  # noqa: E402
from logstore.client.config import DEFAULT_SERVER, ConsumerConfig, ProducerConfig  # noqa: E402
from logstore.client.consumer import Consumer  # noqa: E402
from logstore.client.models import (  # noqa: E402
    BatchMetadata,
    BrokerInfo,
    ClusterDescription,
    CommittedOffset,
    ConsumerRecord,
    GroupDescription,
    GroupMember,
    GroupMetadata,
    GroupSummary,
    PartitionInfo,
    PartitionPlacement,
    RecordMetadata,
    TopicDescription,
    TopicInfo,
    TopicPartition,
)
from logstore.client.producer import Producer  # noqa: E402
from logstore.client.share import AsyncShareConsumer, ShareConsumer, ShareRecord  # noqa: E402
from logstore.client.tasks import TaskQueue  # noqa: E402

__all__ = [
    "DEFAULT_SERVER",
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "AsyncShareConsumer",
    "BatchMetadata",
    "BrokerInfo",
    "ClusterDescription",
    "CommittedOffset",
    "Consumer",
    "ConsumerConfig",
    "ConsumerRecord",
    "GroupDescription",
    "GroupMember",
    "GroupMetadata",
    "GroupSummary",
    "PartitionInfo",
    "PartitionPlacement",
    "Producer",
    "ProducerConfig",
    "RecordFuture",
    "RecordMetadata",
    "ShareConsumer",
    "ShareRecord",
    "TaskQueue",
    "TopicDescription",
    "TopicInfo",
    "TopicPartition",
]
