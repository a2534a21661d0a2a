"""The interaction table (user, item, rating, timestamp) and the maps between
raw ids (as in the source files) and the dense indices models work with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one entry per (user, item) interaction, raw ids."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64

    @classmethod
    def from_arrays(cls, users, items, ratings=None, timestamps=None) -> Interactions:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n = len(users)
        ratings = np.ones(n, np.float32) if ratings is None else np.asarray(ratings, dtype=np.float32)
        timestamps = np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        if not (len(items) == len(ratings) == len(timestamps) == n):
            raise ValueError("interaction arrays differ in length")
        return cls(users, items, ratings, timestamps)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, index: np.ndarray) -> Interactions:
        return Interactions(self.users[index], self.items[index], self.ratings[index], self.timestamps[index])

    @property
    def n_users(self) -> int:
        return len(np.unique(self.users))

    @property
    def n_items(self) -> int:
        return len(np.unique(self.items))


@dataclass(frozen=True)
class IdMap:
    """Sorted raw ids; the position of an id is its dense index."""

    ids: np.ndarray  # int64, sorted, unique

    @classmethod
    def of(cls, raw_ids: np.ndarray) -> IdMap:
        return cls(np.unique(np.asarray(raw_ids, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, raw_id: int) -> int:
        """The dense index of one raw id, or -1 (the per-request form of :meth:`index`)."""
        found = int(self.ids.searchsorted(raw_id))
        return found if found < len(self.ids) and self.ids[found] == raw_id else -1

    def index(self, raw_ids) -> np.ndarray:
        """Dense indices of ``raw_ids``; -1 for ids not in the map."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(raw.shape, -1, np.int64)
        pos = np.searchsorted(self.ids, raw)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == raw, pos, -1)


def interaction_matrix(data: Interactions, users: IdMap, items: IdMap) -> sp.csr_matrix:
    """Binary user × item matrix (RecBole treats every rating as an interaction)."""
    rows = users.index(data.users)
    cols = items.index(data.items)
    keep = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
        shape=(len(users), len(items)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
