"""The assignors as pure functions: ownership, balance, stickiness and determinism."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.broker.groups.assignors import (
    ASSIGNORS,
    range_assignor,
    roundrobin_assignor,
    sticky_assignor,
)

TOPICS = ["a", "b", "c"]

member_names = st.lists(st.text("mnpqrs", min_size=1, max_size=3), min_size=1, max_size=7, unique=True)
partition_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), min_size=1)


@st.composite
def groups(draw: st.DrawFn, uniform: bool = False) -> tuple[dict[str, list[str]], dict[str, int]]:
    """(member -> subscribed topics, topic -> partitions)."""
    counts = draw(partition_counts)
    names = draw(member_names)
    if uniform:
        return {m: sorted(counts) for m in names}, counts
    topics = st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3, unique=True)
    return {m: draw(topics) for m in names}, counts


def owners(assignment: dict[str, set[tuple[str, int]]]) -> dict[tuple[str, int], list[str]]:
    found: dict[tuple[str, int], list[str]] = {}
    for member, partitions in assignment.items():
        for tp in partitions:
            found.setdefault(tp, []).append(member)
    return found


def assert_valid(members: dict[str, list[str]], counts: dict[str, int], assignment) -> None:  # type: ignore[no-untyped-def]
    """Every subscribed partition has exactly one owner, a subscriber; nothing else is assigned."""
    assert set(assignment) == set(members)
    held = owners(assignment)
    for tp, who in held.items():
        assert len(who) == 1, f"{tp} owned by {who}"
        assert tp[0] in members[who[0]], f"{who[0]} owns {tp} without subscribing"
        assert 0 <= tp[1] < counts[tp[0]]
    wanted = {
        (t, p) for t, n in counts.items() for p in range(n) if any(t in ts for ts in members.values())
    }
    assert set(held) == wanted


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@settings(max_examples=150, deadline=None)
@given(group=groups())
def test_every_subscribed_partition_has_exactly_one_subscribing_owner(name, group) -> None:  # type: ignore[no-untyped-def]
    members, counts = group
    assert_valid(members, counts, ASSIGNORS[name](members, counts, {}))


@settings(max_examples=150, deadline=None)
@given(group=groups())
def test_range_balances_each_topic_among_its_subscribers(group) -> None:  # type: ignore[no-untyped-def]
    members, counts = group
    assignment = range_assignor(members, counts, {})
    for topic in counts:
        subscribers = [m for m in members if topic in members[m]]
        sizes = [sum(1 for t, _ in assignment[m] if t == topic) for m in subscribers]
        if sizes:
            assert max(sizes) - min(sizes) <= 1
        for m in subscribers:  # each a contiguous range
            mine = sorted(p for t, p in assignment[m] if t == topic)
            assert mine == list(range(mine[0], mine[0] + len(mine)) if mine else [])


@pytest.mark.parametrize("assignor", [roundrobin_assignor, sticky_assignor])
@settings(max_examples=150, deadline=None)
@given(group=groups(uniform=True))
def test_uniform_subscriptions_give_counts_differing_by_at_most_one(assignor, group) -> None:  # type: ignore[no-untyped-def]
    members, counts = group
    sizes = [len(ps) for ps in assignor(members, counts, {}).values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=150, deadline=None)
@given(group=groups(), previous=groups())
def test_sticky_leaves_no_single_move_that_would_improve_balance(group, previous) -> None:  # type: ignore[no-untyped-def]
    """With mixed subscriptions: whenever two members differ by more than one, the heavier
    holds nothing the lighter could take."""
    members, counts = group
    current = sticky_assignor(previous[0], counts, {})  # an arbitrary earlier assignment
    assignment = sticky_assignor(members, counts, current)
    assert_valid(members, counts, assignment)
    for heavy in members:
        for light in members:
            if len(assignment[heavy]) - len(assignment[light]) > 1:
                assert not any(t in members[light] for t, _ in assignment[heavy])


@settings(max_examples=200, deadline=None)
@given(group=groups(uniform=True), newcomer=st.text("xyz", min_size=1, max_size=2))
def test_sticky_adding_a_member_moves_at_most_its_fair_share(group, newcomer) -> None:  # type: ignore[no-untyped-def]
    members, counts = group
    before = sticky_assignor(members, counts, {})
    grown = {**members, newcomer: sorted(counts)}
    after = sticky_assignor(grown, counts, before)
    assert_valid(grown, counts, after)
    moved = {tp for m in members for tp in before[m] - after[m]}
    total = sum(counts.values())
    assert len(moved) <= math.ceil(total / len(grown))
    assert moved == after[newcomer]  # every move goes to the newcomer, none between old members
    sizes = [len(ps) for ps in after.values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(group=groups(uniform=True), data=st.data())
def test_sticky_removing_a_member_moves_only_its_partitions(group, data) -> None:  # type: ignore[no-untyped-def]
    """Uniform subscriptions: with mixed ones the orphans may only fit one member and balance
    then needs other moves (m{a,b}, n{b,c}, o{c}: removing m leaves n all of b)."""
    members, counts = group
    before = sticky_assignor(members, counts, {})
    leaving = data.draw(st.sampled_from(sorted(members)))
    rest = {m: ts for m, ts in members.items() if m != leaving}
    after = sticky_assignor(rest, counts, {m: before[m] for m in rest})
    assert_valid(rest, counts, after)
    for member in rest:
        assert before[member] <= after[member], f"{member} lost partitions it could keep"
    gained = {tp for m in rest for tp in after[m] - before[m]}
    assert gained <= before[leaving]


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@settings(max_examples=100, deadline=None)
@given(group=groups(), seed=st.integers(0, 1000))
def test_result_does_not_depend_on_input_order(name, group, seed) -> None:  # type: ignore[no-untyped-def]
    members, counts = group
    current = sticky_assignor(members, counts, {})
    shuffled_members = list(members.items())
    random.Random(seed).shuffle(shuffled_members)
    shuffled_counts = list(counts.items())
    random.Random(seed + 1).shuffle(shuffled_counts)
    first = ASSIGNORS[name](members, counts, current)
    second = ASSIGNORS[name](
        {m: list(reversed(ts)) for m, ts in shuffled_members}, dict(shuffled_counts),
        dict(reversed(list(current.items()))),
    )
    assert first == second


def test_sticky_keeps_a_current_owner_that_is_still_valid() -> None:
    members = {"m1": ["a"], "m2": ["a"]}
    current = {"m1": {("a", 3), ("a", 2)}, "m2": {("a", 0), ("a", 1)}}
    assert sticky_assignor(members, {"a": 4}, current) == current


def test_sticky_drops_partitions_of_an_unsubscribed_or_shrunk_topic() -> None:
    members = {"m1": ["a"], "m2": ["a", "b"]}
    current = {"m1": {("a", 0), ("b", 0), ("a", 7)}, "m2": {("a", 1)}}
    target = sticky_assignor(members, {"a": 2, "b": 1}, current)
    assert target == {"m1": {("a", 0)}, "m2": {("a", 1), ("b", 0)}}


def test_no_members_no_assignment() -> None:
    for assignor in ASSIGNORS.values():
        assert assignor({}, {"a": 3}, {}) == {}
