"""Which upstream gets a request: power of two choices, round robin, consistent hashing, revision weights.

Pure functions over plain data. Randomness is injected (the caller passes the
random numbers it drew), so every decision is reproducible in tests.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


def pick_least_of_two(outstanding: Sequence[int], first: int, second: int) -> int:
    """Power of two choices: of two randomly drawn candidates, the one with fewer outstanding requests.

    ``first`` and ``second`` are indices into ``outstanding`` the caller drew at
    random; a tie goes to ``first`` (itself random), so ties spread evenly.
    """
    if len(outstanding) == 1:
        return 0
    if first == second:
        second = (second + 1) % len(outstanding)
    return first if outstanding[first] <= outstanding[second] else second


def pick_round_robin(count: int, cursor: int) -> tuple[int, int]:
    """The next index in turn and the cursor to keep for the following pick."""
    if count <= 0:
        raise ValueError("pick_round_robin: no candidates")
    index = cursor % count
    return index, (index + 1) % count


def pick_next_usable(usable: Sequence[bool], cursor: int) -> tuple[int, int] | None:
    """Round robin over a fixed list that skips unusable members (ejected, already tried), keeping the turn order.

    Returns the chosen index and the next cursor, or None when nothing is usable.
    """
    count = len(usable)
    for step in range(count):
        index = (cursor + step) % count
        if usable[index]:
            return index, (index + 1) % count
    return None


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class HashRing:
    """A consistent-hash ring: sorted points, each owned by one member."""

    points: tuple[int, ...]
    owners: tuple[str, ...]


def build_ring(members: Collection[str], vnodes: int = 64) -> HashRing:
    """A ring with ``vnodes`` points per member; adding or removing one member moves only ~1/n of the keys."""
    pairs = sorted((stable_hash(f"{member}#{i}"), member) for member in members for i in range(vnodes))
    return HashRing(points=tuple(p for p, _ in pairs), owners=tuple(m for _, m in pairs))


def ring_owner(ring: HashRing, key: str, usable: Collection[str] | None = None) -> str | None:
    """The member owning ``key``: the first point clockwise whose owner is usable (all when ``usable`` is None)."""
    if not ring.points:
        return None
    start = bisect_left(ring.points, stable_hash(key))
    total = len(ring.points)
    for step in range(total):
        owner = ring.owners[(start + step) % total]
        if usable is None or owner in usable:
            return owner
    return None


def choose_revision(
    weights: Mapping[str, float], available: Collection[str], roll: float, pinned: str | None = None
) -> str | None:
    """The revision a request goes to.

    ``pinned`` (from ``X-Lichen-Revision``) wins when that revision has a usable
    upstream. Otherwise ``roll`` in [0, 1) picks by weight among the revisions
    that have usable upstreams; revisions without a weight share evenly when no
    weighted revision is available. None when nothing is available.
    """
    if pinned is not None and pinned in available:
        return pinned
    candidates = [(rev, w) for rev, w in sorted(weights.items()) if w > 0 and rev in available]
    if not candidates:
        ordered = sorted(available)
        return ordered[min(int(roll * len(ordered)), len(ordered) - 1)] if ordered else None
    total = sum(w for _, w in candidates)
    threshold = roll * total
    for rev, weight in candidates:
        threshold -= weight
        if threshold < 0:
            return rev
    return candidates[-1][0]
