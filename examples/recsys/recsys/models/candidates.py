"""Precomputed, certified top items for the users whose histories cost most to score.

Scoring a history with EASE reads one row of the n × n weights per item of
history, so a user with thousands of items costs thousands of row reads on
every request (27,278 items: about 6 µs per item). For such users the train
job keeps their ``count`` best items by the score of their training history,
and ``bound``: the best score of any other item they have not seen.

A model whose scores are linear in the history (EASE, ItemKNN: the sum of
the history's rows) can then answer exactly without scoring the history:

* with no new events, the best candidates that pass the request's exclusions
  and filter are the answer as soon as ``k`` of them score at least ``bound``;
* with new events (items the user sent after training), the scores move by
  ``delta``, the sum of the new items' rows (cheap: a few rows), so candidate
  ``j`` scores ``score_j + delta_j`` and any other unseen item at most
  ``bound + max(delta)`` over the non-candidates.

When the ``k``-th pick falls below that bound (a restrictive filter, many
exclusions, a big change in the history) the caller scores the whole history
as before, so the answer is always the one full scoring gives (up to float32
rounding between two equal sums taken in a different order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# Users are given candidates when scoring their history would read more than this many weights (h × n):
# 2M float32 weights, 8 MB, about 0.3 ms here. At 27,278 items that is a history of more than 73 items
# (about half of ML-20M's users); at ML-100K's 1,682 items, more than 1,189: nobody.
SCORING_BUDGET = 2_000_000
DEFAULT_COUNT = 256  # ≥ 2 × the largest k the recommender serves (100), so exclusions rarely force a rescore


def min_history_for(n_items: int, budget: int = SCORING_BUDGET) -> int:
    """The history length above which a user's scoring reads more than ``budget`` weights."""
    return budget // max(1, n_items)


@dataclass(frozen=True)
class Candidates:
    """Per heavy user (row of the training matrix): the ``count`` best unseen items, best first, and the bound."""

    rows: np.ndarray  # int64, sorted: the users' rows in the training matrix
    items: np.ndarray  # int32 (len(rows), count): item indices; -1 pads when a user has fewer unseen items
    scores: np.ndarray  # float32 (len(rows), count): their scores (-inf on padding)
    bounds: np.ndarray  # float32 (len(rows),): every other unseen item scores ≤ this (-inf: there is none)

    def __len__(self) -> int:
        return len(self.rows)

    def find(self, row: int) -> int:
        """The position of ``row`` in these candidates, or -1."""
        position = int(np.searchsorted(self.rows, row))
        return position if position < len(self.rows) and self.rows[position] == row else -1

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rows": self.rows, "items": self.items, "scores": self.scores, "bounds": self.bounds}


def precompute(score_matrix: Callable[[sp.csr_matrix], np.ndarray], history: sp.csr_matrix, *,
               min_history: int, count: int = DEFAULT_COUNT,
               batch: int = 256) -> Candidates:
    """Candidates for every row of ``history`` with more than ``min_history`` items, scored by ``score_matrix``
    (a batch of history rows -> dense scores) a batch of rows at a time."""
    lengths = np.diff(history.indptr)
    rows = np.flatnonzero(lengths > min_history).astype(np.int64)
    n_items = history.shape[1]
    width = min(count, n_items)
    items = np.full((len(rows), width), -1, np.int32)
    scores = np.full((len(rows), width), -np.inf, np.float32)
    bounds = np.full(len(rows), -np.inf, np.float32)
    take = min(width + 1, n_items)  # the candidates and, when there is one more item, the bound
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        block = history[chunk]
        dense = np.array(score_matrix(block), dtype=np.float32)
        coo = block.tocoo()
        dense[coo.row, coo.col] = -np.inf  # seen items are never candidates
        part = np.argpartition(-dense, take - 1, axis=1)[:, :take]
        part.sort(axis=1)  # index order first, so the stable sort below breaks ties by item index as _top does
        values = np.take_along_axis(dense, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        part, values = np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)
        items[start:start + len(chunk)] = part[:, :width]
        scores[start:start + len(chunk)] = values[:, :width]
        if take > width:
            bounds[start:start + len(chunk)] = values[:, width]
    items[np.isneginf(scores)] = -1  # a seen item, where a user has fewer unseen items than candidates
    return Candidates(rows, items, scores, bounds)


def pick(candidates: Candidates, position: int, k: int, *, seen: np.ndarray, fresh: np.ndarray,
         delta: np.ndarray | None, banned: np.ndarray | None,
         filter_fn: Callable[[int], bool] | None, item_ids: np.ndarray) -> list[tuple[int, float]] | None:
    """The top ``k`` (item id, score) from one user's candidates, or None when they cannot certify it.

    ``seen``: the user's training items; ``fresh``: items they added since (indices, not in ``seen``);
    ``delta``: the scores of ``fresh`` alone (None when there are none); ``banned``: item indices excluded."""
    items = candidates.items[position]
    scores = candidates.scores[position]
    if items[-1] < 0:  # padding (fewer unseen items than candidates) is at the end
        valid = items >= 0
        items, scores = items[valid], scores[valid]
    bound = float(candidates.bounds[position])
    if delta is not None:
        scores = scores.astype(np.float64) + delta[items]
        others = np.array(delta, dtype=np.float64)
        others[items] = -np.inf
        others[seen] = -np.inf
        others[fresh] = -np.inf
        bound = bound + float(others.max()) if bound > -np.inf else -np.inf
    drop = np.isin(items, fresh) if len(fresh) else None
    if banned is not None and len(banned):
        drop = np.isin(items, banned) if drop is None else drop | np.isin(items, banned)
    if drop is not None:
        items, scores = items[~drop], scores[~drop]
    if delta is not None:  # the scores moved: best first again, ties by item index (as full scoring's stable sort)
        order = np.lexsort((items, -scores))
        items, scores = items[order], scores[order]
    if filter_fn is None:
        items, scores = items[:k], scores[:k]
    else:
        keep: list[int] = []
        for index, item in enumerate(item_ids[items].tolist()):
            if filter_fn(item):
                keep.append(index)
                if len(keep) == k:
                    break
        items, scores = items[keep], scores[keep]
    if bound > -np.inf and (len(items) < k or scores[k - 1] < bound):
        return None  # an item outside the candidates might outscore the k-th (bound -inf: there is none)
    return list(zip(item_ids[items].tolist(), scores.astype(np.float64).tolist()))
