"""The group coordinator: joins, incremental revocation, eviction, static members, fencing."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from logstore.broker.groups.assignors import ASSIGNORS
from logstore.broker.groups.coordinator import (
    DEFAULT_SESSION_TIMEOUT_MS,
    LEAVE_EPOCH,
    STATIC_LEAVE_EPOCH,
    GroupCoordinator,
    HeartbeatResult,
)
from logstore.errors import (
    FencedMemberEpochError,
    InvalidRequestError,
    PartitionNotAssignedError,
    UnknownMemberError,
)
from logstore.storage import DataDir, ManualClock

GROUP = "g"
SESSION_MS = 1_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def coordinator(data_dir: DataDir, clock: ManualClock) -> GroupCoordinator:
    data_dir.create_topic("t", 4)
    data_dir.create_topic("u", 2)
    return GroupCoordinator(data_dir, clock)


class Client:
    """A consumer as the protocol expects it to behave: it owns what the last answer assigned."""

    def __init__(self, coordinator: GroupCoordinator, topics: list[str] | None = None, **join: object) -> None:
        self.coordinator = coordinator
        self.topics = topics or ["t"]
        result = coordinator.heartbeat(GROUP, "", 0, topics=self.topics, session_timeout_ms=SESSION_MS, **join)  # type: ignore[arg-type]
        self.member_id = result.member_id
        self._take(result)

    def _take(self, result: HeartbeatResult) -> None:
        self.epoch = result.member_epoch
        self.owned = set(result.assignment)

    def beat(self, **options: object) -> HeartbeatResult:
        result = self.coordinator.heartbeat(GROUP, self.member_id, self.epoch, owned=sorted(self.owned), **options)  # type: ignore[arg-type]
        self._take(result)
        return result


def settle(*clients: Client, rounds: int = 10) -> None:
    for _ in range(rounds):
        for client in clients:
            client.beat()
    assert coordinator_of(clients).groups[GROUP].state == "stable"


def coordinator_of(clients: tuple[Client, ...]) -> GroupCoordinator:
    return clients[0].coordinator


def test_join_returns_a_member_id_and_an_epoch_of_at_least_one(coordinator: GroupCoordinator) -> None:
    result = coordinator.heartbeat(GROUP, "", 0, topics=["t"])
    assert result.member_id
    assert result.member_epoch >= 1
    assert result.assignment == [("t", p) for p in range(4)]


def test_join_without_topics_is_refused(coordinator: GroupCoordinator) -> None:
    with pytest.raises(InvalidRequestError):
        coordinator.heartbeat(GROUP, "", 0, topics=[])


def test_unknown_assignor_is_refused(coordinator: GroupCoordinator) -> None:
    with pytest.raises(InvalidRequestError):
        coordinator.heartbeat(GROUP, "", 0, topics=["t"], assignor="magic")


def test_second_member_gets_partitions_only_after_the_first_revokes_them(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    assert first.owned == {("t", p) for p in range(4)}
    second = Client(coordinator)
    assert second.owned == set()  # all four are still held by the first
    first.beat()  # told to revoke: its assignment shrinks
    assert len(first.owned) == 2
    revoked = {("t", p) for p in range(4)} - first.owned
    assert coordinator.groups[GROUP].members[first.member_id].revoking == revoked
    assert second.beat().assignment == []  # not yet: the first has not confirmed
    first.beat()  # owned no longer lists them: they are free
    assert coordinator.groups[GROUP].members[first.member_id].revoking == set()
    assert set(second.beat().assignment) == revoked
    assert coordinator.groups[GROUP].state == "stable"


def test_revoking_partitions_stay_held_while_the_member_does_not_report_owned(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    second = Client(coordinator)
    first.beat()
    for _ in range(3):
        coordinator.heartbeat(GROUP, first.member_id, first.epoch)  # owned not sent
        assert second.beat().assignment == []
    first.beat()
    assert len(second.beat().assignment) == 2


def test_epoch_rises_when_a_member_receives_partitions(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    second = Client(coordinator)
    before = second.epoch
    first.beat()
    first.beat()
    second.beat()
    assert second.epoch > before


def test_session_timeout_evicts_a_silent_member(coordinator: GroupCoordinator, clock: ManualClock) -> None:
    first = Client(coordinator)
    second = Client(coordinator)
    settle(first, second)
    clock.advance(SESSION_MS // 2)
    first.beat()
    clock.advance(SESSION_MS // 2 + 1)  # second silent for longer than its session
    assert coordinator.expire() == 1
    with pytest.raises(UnknownMemberError):
        second.beat()
    settle(first)
    assert first.owned == {("t", p) for p in range(4)}


def test_heartbeats_within_the_session_timeout_keep_a_member(coordinator: GroupCoordinator, clock: ManualClock) -> None:
    first = Client(coordinator)
    for _ in range(5):
        clock.advance(SESSION_MS - 1)
        first.beat()
        assert coordinator.expire() == 0
    assert len(first.owned) == 4


def test_ms_since_poll_above_the_rebalance_timeout_evicts(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator, rebalance_timeout_ms=5_000)
    second = Client(coordinator, rebalance_timeout_ms=5_000)
    settle(first, second)
    first.beat(ms_since_poll=5_000)  # exactly the timeout: still fine
    with pytest.raises(UnknownMemberError):
        first.beat(ms_since_poll=5_001)
    assert first.member_id not in coordinator.groups[GROUP].members
    settle(second)
    assert len(second.owned) == 4


def test_static_member_rejoining_keeps_its_partitions_and_fences_the_old_id(coordinator: GroupCoordinator) -> None:
    static = Client(coordinator, instance_id="host-1")
    other = Client(coordinator)
    settle(static, other)
    kept = set(static.owned)
    assert kept
    left = coordinator.heartbeat(GROUP, static.member_id, STATIC_LEAVE_EPOCH)
    assert left.member_epoch == STATIC_LEAVE_EPOCH
    for _ in range(3):  # no rebalance while it is away: the other does not get its partitions
        other.beat()
        assert other.owned.isdisjoint(kept)
    back = Client(coordinator, instance_id="host-1")
    assert back.member_id != static.member_id
    assert back.owned == kept
    assert back.epoch > static.epoch
    with pytest.raises(UnknownMemberError):
        static.beat()
    with pytest.raises(UnknownMemberError):
        coordinator.check_member(GROUP, static.member_id, static.epoch, [])
    coordinator.check_member(GROUP, back.member_id, back.epoch, sorted(kept))


def test_static_member_away_longer_than_its_session_is_evicted(coordinator: GroupCoordinator, clock: ManualClock) -> None:
    static = Client(coordinator, instance_id="host-1")
    other = Client(coordinator)
    settle(static, other)
    coordinator.heartbeat(GROUP, static.member_id, STATIC_LEAVE_EPOCH)
    clock.advance(SESSION_MS // 2)
    other.beat()
    clock.advance(SESSION_MS // 2 + 1)
    assert coordinator.expire() == 1
    settle(other)
    assert len(other.owned) == 4


def test_leave_frees_the_partitions_for_the_others(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    second = Client(coordinator)
    settle(first, second)
    assert coordinator.heartbeat(GROUP, first.member_id, LEAVE_EPOCH).member_epoch == LEAVE_EPOCH
    assert second.beat().assignment == [("t", p) for p in range(4)]
    with pytest.raises(UnknownMemberError):
        first.beat()


def test_a_stale_epoch_is_fenced(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    stale = first.epoch
    for _ in range(2):  # someone comes and goes: the first gives up, then receives partitions again
        visitor = Client(coordinator)
        settle(first, visitor)
        coordinator.heartbeat(GROUP, visitor.member_id, LEAVE_EPOCH)
        settle(first)
    member = coordinator.groups[GROUP].members[first.member_id]
    assert stale not in (member.member_epoch, member.previous_epoch)
    with pytest.raises(FencedMemberEpochError) as caught:
        coordinator.heartbeat(GROUP, first.member_id, stale)
    assert caught.value.current_epoch == member.member_epoch
    with pytest.raises(FencedMemberEpochError):
        coordinator.check_member(GROUP, first.member_id, stale, [])


def test_a_fenced_member_can_leave_and_rejoin_without_waiting_for_its_session(coordinator: GroupCoordinator) -> None:
    """Leaving is accepted whatever the epoch, so a fenced member frees its partitions at once."""
    first = Client(coordinator)
    other = Client(coordinator, topics=["u"])
    with pytest.raises(FencedMemberEpochError):
        coordinator.heartbeat(GROUP, first.member_id, first.epoch + 7)
    coordinator.heartbeat(GROUP, first.member_id, LEAVE_EPOCH)
    again = Client(coordinator)
    assert again.owned == {("t", p) for p in range(4)}
    settle(again, other)


def test_the_previous_epoch_is_still_accepted(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator)
    member = coordinator.groups[GROUP].members[first.member_id]
    assert member.previous_epoch >= 0
    coordinator.heartbeat(GROUP, first.member_id, member.previous_epoch, owned=sorted(first.owned))
    coordinator.check_member(GROUP, first.member_id, member.previous_epoch, [("t", 0)])


def test_an_unknown_member_is_refused(coordinator: GroupCoordinator) -> None:
    Client(coordinator)
    with pytest.raises(UnknownMemberError):
        coordinator.heartbeat(GROUP, "nobody", 1)
    with pytest.raises(UnknownMemberError):
        coordinator.heartbeat("other-group", "nobody", 1)
    with pytest.raises(UnknownMemberError):
        coordinator.check_member(GROUP, "nobody", 1, [])


def test_check_member_refuses_partitions_not_assigned_to_it(coordinator: GroupCoordinator) -> None:
    first = Client(coordinator, topics=["t"])
    with pytest.raises(PartitionNotAssignedError) as caught:
        coordinator.check_member(GROUP, first.member_id, first.epoch, [("t", 0), ("u", 0)])
    assert (caught.value.topic, caught.value.partition) == ("u", 0)


def test_check_member_accepts_partitions_being_revoked(coordinator: GroupCoordinator) -> None:
    """A member commits its last offsets of a partition after being told to give it up."""
    first = Client(coordinator)
    Client(coordinator)
    first.beat()
    revoking = coordinator.groups[GROUP].members[first.member_id].revoking
    assert revoking
    coordinator.check_member(GROUP, first.member_id, first.epoch, sorted(revoking))


def test_a_member_without_id_is_refused_while_the_group_has_members(coordinator: GroupCoordinator) -> None:
    coordinator.check_member("empty-group", "", -1, [("t", 0)])  # standalone consumer: fine
    Client(coordinator)
    with pytest.raises(UnknownMemberError):
        coordinator.check_member(GROUP, "", -1, [("t", 0)])


def test_partitions_added_to_a_topic_are_assigned(coordinator: GroupCoordinator, data_dir: DataDir) -> None:
    first = Client(coordinator, topics=["u"])
    assert len(first.owned) == 2
    data_dir.add_partitions("u", 5)
    first.beat()
    assert first.owned == {("u", p) for p in range(5)}


def test_subscribing_to_a_missing_topic_assigns_nothing_until_it_exists(coordinator: GroupCoordinator, data_dir: DataDir) -> None:
    first = Client(coordinator, topics=["later"])
    assert first.owned == set()
    data_dir.create_topic("later", 3)
    first.beat()
    assert len(first.owned) == 3


def test_default_session_timeout_applies_when_none_is_given(coordinator: GroupCoordinator, clock: ManualClock) -> None:
    result = coordinator.heartbeat(GROUP, "", 0, topics=["t"])
    clock.advance(DEFAULT_SESSION_TIMEOUT_MS)
    assert coordinator.expire() == 0
    clock.advance(1)
    assert coordinator.expire() == 1
    assert result.member_id not in coordinator.groups[GROUP].members


# -- a random protocol run ------------------------------------------------------------------------


class GroupMachine(RuleBasedStateMachine):
    """Members join, leave, crash, step away (static) and come back, and heartbeat as
    well-behaved clients, in random order.

    After every step no partition is held by two members — neither in the coordinator's books
    (assigned or revoking) nor in what the clients were told they own. ``settle`` checks that
    once everybody keeps heartbeating, the group converges to the assignor's target.
    """

    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.coordinator = GroupCoordinator(SHARED["data_dir"], self.clock)
        self.live: dict[str, Client] = {}
        self.away: dict[str, Client] = {}  # instance id -> static member that left with -2
        self.instances = 0

    def members(self) -> dict:  # type: ignore[type-arg]
        group = self.coordinator.groups.get(GROUP)
        return group.members if group is not None else {}

    @rule(target=clients, topics=st.sampled_from([["t"], ["u"], ["t", "u"]]), static=st.booleans())
    def join(self, topics: list[str], static: bool) -> Client:
        instance = ""
        if static:
            instance = f"i{self.instances}"
            self.instances += 1
        client = Client(self.coordinator, topics, instance_id=instance)
        client.instance_id = instance  # type: ignore[attr-defined]
        self.live[client.member_id] = client
        return client

    @rule(client=clients)
    def heartbeat(self, client: Client) -> None:
        if client.member_id in self.live:
            client.beat()

    @rule(client=clients, topics=st.sampled_from([["t"], ["u"], ["t", "u"]]))
    def resubscribe(self, client: Client, topics: list[str]) -> None:
        if client.member_id in self.live:
            client.topics = topics
            client.beat(topics=topics)

    @rule(client=clients, assignor=st.sampled_from(sorted(ASSIGNORS)))
    def switch_assignor(self, client: Client, assignor: str) -> None:
        if client.member_id in self.live:
            client.beat(assignor=assignor)

    @rule(client=consumes(clients))
    def leave(self, client: Client) -> None:
        if self.live.pop(client.member_id, None) is not None:
            self.coordinator.heartbeat(GROUP, client.member_id, LEAVE_EPOCH)

    @rule(client=consumes(clients))
    def step_away(self, client: Client) -> None:
        instance = getattr(client, "instance_id", "")
        if not instance or self.live.pop(client.member_id, None) is None:
            return
        self.coordinator.heartbeat(GROUP, client.member_id, STATIC_LEAVE_EPOCH)
        self.away[instance] = client

    @precondition(lambda self: bool(self.away))
    @rule(target=clients, data=st.data())
    def come_back(self, data: st.DataObject) -> Client:
        instance = data.draw(st.sampled_from(sorted(self.away)))
        old = self.away.pop(instance)
        reserved = set(self.members()[old.member_id].assigned)
        client = Client(self.coordinator, old.topics, instance_id=instance)
        client.instance_id = instance  # type: ignore[attr-defined]
        assert client.member_id != old.member_id
        member = self.members()[client.member_id]
        assert reserved <= member.assigned | member.revoking  # nothing was handed on meanwhile
        with pytest.raises(UnknownMemberError):
            self.coordinator.heartbeat(GROUP, old.member_id, old.epoch)
        self.live[client.member_id] = client
        return client

    @rule(client=consumes(clients))
    def crash(self, client: Client) -> None:
        """It stops heartbeating; the others go on until its session runs out."""
        if self.live.pop(client.member_id, None) is None:
            return
        for _ in range(2):
            self.clock.advance(SESSION_MS // 2 + 1)
            for other in self.live.values():
                other.beat()
        assert self.coordinator.expire() >= 1
        assert client.member_id not in self.members()
        self.away = {i: c for i, c in self.away.items() if c.member_id in self.members()}

    @rule()
    def settle(self) -> None:
        if not self.live:
            return
        for _ in range(2 * len(self.live) + 2):
            for client in self.live.values():
                client.beat()
        group = self.coordinator.groups[GROUP]
        for client in self.live.values():
            assert client.owned == group.members[client.member_id].assigned
        if self.away:
            return  # the absent hold their partitions: the group cannot be stable yet
        assert group.state == "stable"
        for client in self.live.values():
            assert client.owned == group.target[client.member_id]
        subscribed = {t for c in self.live.values() for t in c.topics}
        everything = {(t, p) for t in subscribed for p in range(SHARED["partitions"][t])}
        assert set().union(*(c.owned for c in self.live.values())) == everything

    @invariant()
    def no_partition_has_two_holders(self) -> None:
        members = self.members()
        seen: dict[tuple[str, int], str] = {}
        for member in members.values():
            assert member.assigned.isdisjoint(member.revoking)
            for tp in member.assigned | member.revoking:
                assert tp not in seen, f"{tp} held by {seen[tp]} and {member.member_id}"
                seen[tp] = member.member_id
        told: dict[tuple[str, int], str] = {}
        for client in [*self.live.values(), *self.away.values()]:
            for tp in client.owned:
                assert tp not in told, f"{tp} owned by clients {told[tp]} and {client.member_id}"
                told[tp] = client.member_id
        assert set(self.live) | {c.member_id for c in self.away.values()} == set(members)


SHARED: dict = {}  # type: ignore[type-arg]


@pytest.fixture(scope="module", autouse=True)
def shared_topics():  # type: ignore[no-untyped-def]
    """One data directory for every run of the machine (it only reads partition counts)."""
    directory = Path(tempfile.mkdtemp(prefix="logstore-groups-"))
    store = DataDir.open(directory, background=False)
    store.create_topic("t", 5)
    store.create_topic("u", 3)
    SHARED.update(data_dir=store, partitions={"t": 5, "u": 3})
    yield
    store.close()
    shutil.rmtree(directory, ignore_errors=True)


TestGroupMachine = GroupMachine.TestCase
TestGroupMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
