"""A clustered topic's config: which keys live in the storage layer's ``LogConfig`` (retention,
segment size...: each broker applies them to its local copy) and which only in the topic's etcd
record (``min_insync_replicas``, ``unclean_leader_election``: the leader and the controller use
them); pure functions over the records of ``records.py``.

Threading: any (no state).
"""

from __future__ import annotations

import dataclasses

from logstore.cluster.records import TopicRecord
from logstore.errors import InvalidConfigError
from logstore.storage import DataDir, LogConfig

#: Topic config keys kept in etcd, not in the storage layer's LogConfig.
CLUSTER_TOPIC_KEYS = ("min_insync_replicas", "unclean_leader_election")


def split_topic_config(config: dict[str, str], replication_factor: int) -> tuple[dict[str, str], int, bool]:
    """Storage config, min_insync_replicas (default 2 at factor 3 and more, else 1) and whether
    unclean leader election is allowed, from a CreateTopic config map."""
    storage = {k: v for k, v in config.items() if k.replace(".", "_").replace("-", "_") not in CLUSTER_TOPIC_KEYS}
    normalized = {k.replace(".", "_").replace("-", "_"): v for k, v in config.items()}
    LogConfig.from_dict(storage)  # InvalidConfigError names a bad key
    default_min = 2 if replication_factor >= 3 else 1
    try:
        min_isr = int(normalized.get("min_insync_replicas", default_min))
    except ValueError:
        raise InvalidConfigError("min_insync_replicas must be an integer", key="min_insync_replicas",
                                 value=normalized.get("min_insync_replicas")) from None
    if not 1 <= min_isr <= replication_factor:
        raise InvalidConfigError(
            f"min_insync_replicas must be between 1 and the replication factor {replication_factor}, "
            f"not {min_isr}", key="min_insync_replicas", value=min_isr,
        )
    unclean_text = str(normalized.get("unclean_leader_election", "false")).lower()
    if unclean_text not in ("true", "false"):
        raise InvalidConfigError("unclean_leader_election must be true or false",
                                 key="unclean_leader_election", value=unclean_text)
    return storage, min_isr, unclean_text == "true"


def storage_config(data_dir: DataDir, record: TopicRecord) -> LogConfig:
    """The local copy's config of a topic: the broker's defaults under the record's keys."""
    return LogConfig.from_dict(record.config, base=data_dir.defaults)


def apply_config(data_dir: DataDir, record: TopicRecord) -> None:
    """Bring the local copy's storage config to the record's (after an AlterTopicConfig)."""
    wanted = storage_config(data_dir, record)
    if wanted != data_dir.topic(record.name).config:
        data_dir.alter_config(record.name, dataclasses.asdict(wanted))
