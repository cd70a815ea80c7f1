"""The routing table and the metadata cache, as pure logic over scripted Metadata answers."""

from __future__ import annotations

from typing import Any

import pytest

from logstore.client.batch import ProducerBatch
from logstore.client.metadata import ClusterMap, Metadata
from logstore.errors import NotLeaderError, UnavailableError, UnknownTopicError
from tests.client.scripted import BROKERS, ScriptedCluster, metadata_response

LEADERS = {("t", 0): 1, ("t", 1): 2, ("t", 2): 3, ("t", 3): 1}


def cache(cluster: ScriptedCluster, servers: str = "b1:7070", **options: Any) -> Metadata:
    clock = options.pop("clock", None)
    return Metadata(servers, cluster, retries=options.pop("retries", 0), retry_backoff_ms=1,  # type: ignore[arg-type]
                    retry_backoff_max_ms=1, timeout_s=1.0, sleep=lambda _s: None,
                    **({"clock": clock} if clock else {}), **options)


def batch(topic: str, partition: int) -> ProducerBatch:
    return ProducerBatch(topic, partition, 0.0)


def test_batches_are_grouped_by_their_partitions_leader_in_order() -> None:
    view = ClusterMap.from_response(metadata_response(LEADERS))
    batches = [batch("t", p) for p in (0, 1, 3, 2, 0)]
    groups = view.group_by_leader(batches, lambda b: (b.topic, b.partition), "bootstrap:1")
    assert {address: [b.partition for b in group] for address, group in groups.items()} == {
        BROKERS[1]: [0, 3, 0], BROKERS[2]: [1], BROKERS[3]: [2],
    }


def test_a_single_node_sends_everything_to_the_bootstrap_address() -> None:
    response = metadata_response(LEADERS, clustered=False, brokers={0: "0.0.0.0:7070"})
    view = ClusterMap.from_response(response)
    groups = view.group_by_leader([batch("t", 0), batch("t", 1)], lambda b: (b.topic, b.partition),
                                  "127.0.0.1:7070")
    assert list(groups) == ["127.0.0.1:7070"] and len(groups["127.0.0.1:7070"]) == 2


def test_partitions_without_a_live_leader_are_grouped_under_none() -> None:
    view = ClusterMap.from_response(metadata_response({("t", 0): -1, ("t", 1): 2, ("t", 2): 3},
                                                      dead=frozenset({3})))
    groups = view.group_by_leader([("t", 0), ("t", 1), ("t", 2), ("t", 9), ("u", 0)],
                                  lambda tp: tp, "x:1")
    assert groups == {None: [("t", 0), ("t", 2), ("t", 9), ("u", 0)], BROKERS[2]: [("t", 1)]}


def test_describe_counts_partitions_whose_isr_is_short() -> None:
    response = metadata_response(LEADERS, isr={("t", 1): [2], ("t", 2): [3, 1]})
    described = ClusterMap.from_response(response).describe()
    assert described.under_replicated_partitions == 2
    assert [p.partition for p in described.partitions if p.under_replicated] == [1, 2]
    assert (described.controller_id, described.controller_epoch) == (1, 9)
    assert [(b.broker_id, b.address, b.alive) for b in described.brokers] == [
        (1, BROKERS[1], True), (2, BROKERS[2], True), (3, BROKERS[3], True)]


def test_a_topic_with_an_error_entry_raises_it() -> None:
    response = metadata_response({})
    entry = response.topics.add(name="gone")
    entry.error.reason, entry.error.message = "UNKNOWN_TOPIC", "topic 'gone' does not exist"
    entry.error.metadata["topic"] = "gone"
    cluster = ScriptedCluster({})
    cluster.Metadata = lambda request, timeout=None: response  # type: ignore[method-assign]
    with pytest.raises(UnknownTopicError) as caught:
        cache(cluster).topic("gone")
    assert caught.value.topic == "gone"


def test_the_leader_is_looked_up_from_the_cached_map() -> None:
    cluster = ScriptedCluster(LEADERS)
    metadata = cache(cluster)
    assert metadata.leader("t", 1) == BROKERS[2]
    assert metadata.leader("t", 2) == BROKERS[3]
    assert len(cluster.metadata_calls) == 1


def test_not_leader_makes_the_next_lookup_read_the_map_again() -> None:
    cluster = ScriptedCluster(LEADERS)
    metadata = cache(cluster)
    assert metadata.leader("t", 0) == BROKERS[1]
    cluster.leaders[("t", 0)] = 2  # a failover
    assert metadata.leader("t", 0) == BROKERS[1]  # still cached
    metadata.observe(NotLeaderError("t", 0, 2, 2), BROKERS[1])
    assert metadata.leader("t", 0) == BROKERS[2]
    assert len(cluster.metadata_calls) == 2


def test_a_partition_without_a_leader_raises_a_retriable_not_leader() -> None:
    cluster = ScriptedCluster({("t", 0): -1})
    metadata = cache(cluster)
    with pytest.raises(NotLeaderError):
        metadata.leader("t", 0)
    cluster.leaders[("t", 0)] = 3
    assert metadata.leader("t", 0) == BROKERS[3]  # the failed lookup made the map stale


def test_the_map_is_read_again_after_max_age() -> None:
    now = [0.0]
    cluster = ScriptedCluster(LEADERS)
    metadata = cache(cluster, max_age_ms=1000, clock=lambda: now[0])
    metadata.view()
    now[0] = 0.5
    metadata.view()
    assert len(cluster.metadata_calls) == 1
    now[0] = 1.6
    metadata.view()
    assert len(cluster.metadata_calls) == 2


def test_bootstrap_tries_each_address_in_order_until_one_answers() -> None:
    cluster = ScriptedCluster(LEADERS)
    cluster.unreachable = {"dead1:1", "dead2:1"}
    metadata = cache(cluster, "dead1:1,dead2:1,b1:7070")
    assert metadata.address() == "b1:7070"
    assert cluster.metadata_calls == ["dead1:1", "dead2:1", "b1:7070"]


def test_an_unreachable_current_broker_moves_the_rotation_on() -> None:
    cluster = ScriptedCluster(LEADERS)
    metadata = cache(cluster, "b1:7070,b2:7070")
    assert metadata.address() == "b1:7070"
    metadata.observe(UnavailableError("cannot reach the broker at b1:7070"), "b1:7070")
    assert metadata.address() == "b2:7070"


def test_every_address_down_raises_after_the_retries() -> None:
    cluster = ScriptedCluster(LEADERS)
    cluster.unreachable = {"a:1", "b:1"}
    with pytest.raises(UnavailableError):
        cache(cluster, "a:1,b:1", retries=2).refresh()
    assert cluster.metadata_calls == ["a:1", "b:1"] * 3


def test_a_single_node_routes_to_the_address_that_answered_without_asking_again() -> None:
    cluster = ScriptedCluster(LEADERS)
    cluster.clustered, cluster.unreachable = False, {"dead:1"}
    metadata = cache(cluster, "dead:1,live:1")
    assert metadata.leader("t", 2) == "live:1"  # not the advertised 0.0.0.0:7070
    metadata.observe(NotLeaderError("t", 2), "live:1")
    assert metadata.leader("t", 2) == "live:1"
    assert cluster.metadata_calls == ["dead:1", "live:1"]


def test_a_partition_of_a_topic_never_asked_about_makes_the_map_cover_it() -> None:
    cluster = ScriptedCluster(LEADERS)
    metadata = cache(cluster)
    metadata.refresh()  # asks about no topic in particular
    cluster.leaders[("u", 0)] = 3
    assert metadata.view_for({"u"}).leader_address("u", 0) == BROKERS[3]
    assert metadata.view_for({"u", "t"}).leader_address("t", 1) == BROKERS[2]
    assert len(cluster.metadata_calls) == 2
