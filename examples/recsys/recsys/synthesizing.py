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


def synthesize_at_scale(
    n_users: int,
    n_items: int,
    n_interactions: int,
    *,
    zipf_exponent: float = 0.9,
    taste_concentration: float = 0.3,
    from_popularity: float = 0.35,
    min_per_user: int = 20,
    seed: int = 0,
) -> Interactions:
    """A long-tailed dataset of any size, in memory linear in the interactions (:func:`synthesize`
    holds users × items affinities, too much past ~10⁹).

    Items fall into about one taste cluster per 500 items, with Zipf popularity; each user has a
    Dirichlet taste over the clusters and a log-normal number of ratings (at least ``min_per_user``,
    as MovieLens keeps). Each rating picks an item by popularity alone (``from_popularity`` of them) or
    from a cluster the user likes, by popularity within it; repeats are dropped, so the count comes out
    within a few percent of ``n_interactions``. Ratings are half stars, higher inside the user's
    favourite clusters."""
    if n_users < 1 or n_items < 10 or n_interactions < n_users:
        raise ValueError("need at least 1 user, 10 items and one interaction per user")
    rng = np.random.default_rng(seed)
    clusters = max(4, n_items // 500)
    item_cluster = rng.integers(0, clusters, n_items)
    popularity = (rng.permutation(n_items) + 1.0) ** -zipf_exponent
    activity = rng.lognormal(0.0, 1.1, n_users)
    scale = n_interactions / activity.sum()
    for _ in range(4):  # the clipping moves the total: rescale what is not clipped
        sizes = np.clip(np.rint(activity * scale), min(min_per_user, n_items // 2), n_items // 2).astype(np.int64)
        scale *= n_interactions / max(1, sizes.sum())
    taste = rng.dirichlet(np.full(clusters, taste_concentration), n_users)
    # one draw per wanted rating and as many again, for the repeats dropped below
    users = np.repeat(np.arange(n_users), 2 * sizes)
    # a cluster per draw by the user's taste: one searchsorted over every user's CDF laid end to end
    taste_cdf = np.cumsum(taste, axis=1)
    taste_cdf /= taste_cdf[:, -1:]
    taste_cdf += np.arange(n_users)[:, None]
    cluster = np.searchsorted(taste_cdf.ravel(), users + rng.random(len(users)) * 0.999999) - users * clusters
    del taste_cdf
    # an item by popularity within that cluster, the same way over the clusters' CDFs end to end
    by_cluster = np.lexsort((np.arange(n_items), item_cluster))
    weights = popularity[by_cluster]
    starts = np.searchsorted(item_cluster[by_cluster], np.arange(clusters))
    within = np.cumsum(weights) - np.repeat(np.cumsum(weights)[starts - 1] * (starts > 0),
                                            np.diff(np.append(starts, n_items)))
    ends = np.append(starts[1:], n_items) - 1
    totals = within[ends]
    within_cdf = within / np.repeat(np.where(totals > 0, totals, 1.0), np.diff(np.append(starts, n_items)))
    within_cdf += item_cluster[by_cluster]
    items = by_cluster[np.minimum(np.searchsorted(within_cdf, cluster + rng.random(len(users)) * 0.999999),
                                  n_items - 1)]
    global_cdf = np.cumsum(popularity) / popularity.sum()
    popular = rng.random(len(users)) < from_popularity
    items[popular] = np.minimum(np.searchsorted(global_cdf, rng.random(int(popular.sum()))), n_items - 1)
    # drop repeats, then keep at most each user's size, chosen at random
    keys, first = np.unique(users * n_items + items, return_index=True)
    users, items = keys // n_items, keys % n_items
    order = np.lexsort((rng.random(len(users)), users))
    users, items = users[order], items[order]
    rank = np.arange(len(users)) - np.searchsorted(users, users)
    keep = rank < sizes[users]
    users, items = users[keep], items[keep]
    liked = taste[users, item_cluster[items]] * clusters  # > 1 inside the user's favourite clusters
    z = np.log(liked + 0.05) * 0.6 + rng.normal(scale=0.8, size=len(users))
    ratings = np.clip(np.rint((3.5 + z) * 2) / 2, 0.5, 5.0)
    stamps = START_TS + rng.integers(0, 3 * 365 * 86_400, len(users))
    return Interactions.from_arrays(users + 1, items + 1, ratings, stamps)


def write_ratings_csv(data: Interactions, path) -> None:
    """``data`` as a MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp; a header; half stars)."""
    import pyarrow as pa
    import pyarrow.csv

    table = pa.table({"userId": data.users, "movieId": data.items,
                      "rating": np.asarray(data.ratings, np.float64), "timestamp": data.timestamps})
    with open(path, "wb") as handle:
        handle.write(b"userId,movieId,rating,timestamp\n")
        pyarrow.csv.write_csv(table, handle, pyarrow.csv.WriteOptions(include_header=False, quoting_style="none"))
