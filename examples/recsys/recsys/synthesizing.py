"""A synthetic ratings set for machines without the real data: Zipf-like item
popularity plus low-rank user/item taste factors, so popularity baselines and
collaborative models both have something real to find (and differ)."""

from __future__ import annotations

import numpy as np

from recsys.interactions import Interactions

START_TS = 874_724_710  # the first timestamp in MovieLens 100K, for realism


def synthesize(
    n_users: int = 943,
    n_items: int = 1682,
    *,
    rank: int = 12,
    mean_per_user: float = 80.0,
    zipf_exponent: float = 1.2,
    taste_strength: float = 2.0,
    seed: int = 0,
) -> Interactions:
    """Sample each user's items without replacement with probability
    ∝ popularity(item) · exp(strength · ⟨user, item⟩); ratings 1–5 follow the
    same affinity plus noise."""
    if n_users < 1 or n_items < 10:
        raise ValueError("need at least 1 user and 10 items")
    rng = np.random.default_rng(seed)
    popularity_rank = rng.permutation(n_items) + 1
    log_pop = -zipf_exponent * np.log(popularity_rank)
    user_f = rng.normal(size=(n_users, rank)) / np.sqrt(rank)
    item_f = rng.normal(size=(n_items, rank))
    affinity = taste_strength * (user_f @ item_f.T)
    logits = affinity + log_pop
    sizes = np.clip(rng.lognormal(np.log(mean_per_user), 0.8, n_users), 10, n_items // 2).astype(int)
    users, items, ratings, stamps = [], [], [], []
    for u in range(n_users):
        k = int(sizes[u])
        gumbel = logits[u] - np.log(-np.log(rng.random(n_items)))  # Gumbel-top-k = sampling w/o replacement
        chosen = np.argpartition(-gumbel, k - 1)[:k]
        z = affinity[u, chosen]
        z = (z - z.mean()) / (z.std() + 1e-9) + rng.normal(scale=0.7, size=k)
        users.append(np.full(k, u + 1))
        items.append(chosen + 1)
        ratings.append(np.clip(np.rint(3.5 + 1.1 * z), 1, 5))
        stamps.append(START_TS + np.sort(rng.integers(0, 200 * 86_400, k)))
    return Interactions.from_arrays(np.concatenate(users), np.concatenate(items),
                                    np.concatenate(ratings), np.concatenate(stamps))
