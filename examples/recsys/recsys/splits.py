"""RecBole's random ratio split, grouped by user ("RO" order, ``RS: [0.8, 0.1, 0.1]``).

All interactions are shuffled once with the seed; each user's interactions,
in that shuffled order, are then cut by ratio exactly as RecBole's
``Dataset._calcu_split_ids`` does: every part except the first is rounded
down, the first takes the rest, and a part whose share is between 0 and 1
interaction is given one while the first still has more than one.
"""

from __future__ import annotations

import numpy as np

from recsys.interactions import Interactions


def split_counts(total: int, ratios: tuple[float, ...]) -> list[int]:
    """How many of ``total`` interactions go to each part (RecBole's rule)."""
    norm = sum(ratios)
    ratios = tuple(r / norm for r in ratios)
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def split_by_user(
    data: Interactions, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0
) -> list[np.ndarray]:
    """Row indices of ``data`` for each part (train, valid, test), seeded."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(data))
    grouped = shuffled[np.argsort(data.users[shuffled], kind="stable")]
    _, starts, sizes = np.unique(data.users[grouped], return_index=True, return_counts=True)
    parts: list[list[np.ndarray]] = [[] for _ in ratios]
    for start, size in zip(starts, sizes):
        offset = start
        for part, count in zip(parts, split_counts(int(size), ratios)):
            part.append(grouped[offset:offset + count])
            offset += count
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]
