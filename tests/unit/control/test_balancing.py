"""Balancing decisions: power of two choices, round robin, consistent hashing, revision weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lichen.control.balancing import (
    build_ring,
    choose_revision,
    pick_least_of_two,
    pick_next_usable,
    pick_round_robin,
    ring_owner,
    stable_hash,
)


def test_least_of_two_prefers_fewer_outstanding_and_breaks_ties_to_first() -> None:
    assert pick_least_of_two([5, 1, 9], 0, 1) == 1
    assert pick_least_of_two([5, 1, 9], 2, 0) == 0
    assert pick_least_of_two([3, 3], 1, 0) == 1
    assert pick_least_of_two([7], 0, 0) == 0
    assert pick_least_of_two([1, 2, 3], 2, 2) in (0, 2)  # same index drawn twice: compares with a neighbour


def test_least_of_two_drives_load_toward_the_idle_replica() -> None:
    rng = random.Random(7)
    outstanding = [10, 0, 0]
    picks = Counter()
    for _ in range(3000):
        first, second = rng.sample(range(3), 2)
        picks[pick_least_of_two(outstanding, first, second)] += 1
    assert picks[0] < 0.05 * 3000  # the busy one is chosen only when drawn... never, since it always loses
    assert abs(picks[1] - picks[2]) < 0.1 * 3000


def test_round_robin_cycles() -> None:
    cursor = 0
    seen = []
    for _ in range(7):
        index, cursor = pick_round_robin(3, cursor)
        seen.append(index)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        pick_round_robin(0, 0)


def test_round_robin_skips_unusable_members_without_losing_its_turn() -> None:
    usable = [False, True, True]
    cursor = 0
    seen = []
    for _ in range(4):
        index, cursor = pick_next_usable(usable, cursor)
        seen.append(index)
    assert seen == [1, 2, 1, 2]
    assert pick_next_usable([True, False, True], 1) == (2, 0)
    assert pick_next_usable([False, False], 0) is None


def test_stable_hash_is_deterministic() -> None:
    assert stable_hash("user-42") == stable_hash("user-42")
    assert stable_hash("user-42") != stable_hash("user-43")


def test_ring_is_sticky_and_moves_few_keys_when_a_member_leaves() -> None:
    members = ["a", "b", "c", "d"]
    ring = build_ring(members)
    keys = [f"user-{i}" for i in range(2000)]
    before = {k: ring_owner(ring, k) for k in keys}
    assert before == {k: ring_owner(ring, k) for k in keys}  # same key, same owner
    share = Counter(before.values())
    assert all(0.1 * len(keys) < share[m] < 0.4 * len(keys) for m in members), share
    after = {k: ring_owner(ring, k, usable={"a", "b", "c"}) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "d" for k in moved)  # only d's keys move
    assert all(after[k] != "d" for k in keys)


def test_ring_with_nothing_usable() -> None:
    assert ring_owner(build_ring([]), "k") is None
    assert ring_owner(build_ring(["a"]), "k", usable=set()) is None


def test_revision_weights_split_traffic() -> None:
    weights = {"v1": 90, "v2": 10}
    rng = random.Random(3)
    counts = Counter(choose_revision(weights, {"v1", "v2"}, rng.random()) for _ in range(10000))
    assert 0.08 < counts["v2"] / 10000 < 0.12


def test_pinned_revision_wins_when_available() -> None:
    assert choose_revision({"v1": 100, "v2": 0}, {"v1", "v2"}, 0.5, pinned="v2") == "v2"
    assert choose_revision({"v1": 100}, {"v1"}, 0.5, pinned="v9") == "v1"


def test_revision_without_endpoints_gets_nothing_and_unweighted_share_evenly() -> None:
    assert choose_revision({"v1": 50, "v2": 50}, {"v2"}, 0.1) == "v2"
    assert choose_revision({}, {"a", "b"}, 0.2) == "a"
    assert choose_revision({}, {"a", "b"}, 0.7) == "b"
    assert choose_revision({"v1": 1}, set(), 0.5) is None
