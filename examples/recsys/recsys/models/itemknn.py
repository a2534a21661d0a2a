"""ItemKNN: cosine item-item similarity (with shrinkage), keeping each item's
``k`` nearest neighbours; a user's score for item j sums the similarities of
j's neighbours in their history."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from lichen import DataError

from recsys.models.ease import MAX_ITEMS
from recsys.models.recommenders import RecModel


def cosine_similarity(matrix: sp.csr_matrix, shrink: float = 0.0) -> np.ndarray:
    """Dense item × item cosine similarity of a binary user × item matrix, zero diagonal."""
    co = (matrix.T @ matrix).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(co)).astype(np.float32)
    sim = co / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    return sim


def keep_top_neighbours(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """Sparse copy of ``sim`` keeping, for each column j, its ``k`` largest entries."""
    n = sim.shape[0]
    k = max(1, min(k, n - 1)) if n > 1 else 0
    if k == 0:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    rows = np.argpartition(-sim, k - 1, axis=0)[:k]  # k × n: neighbour rows per column
    cols = np.broadcast_to(np.arange(n), rows.shape)
    values = sim[rows, cols]
    keep = values > 0
    return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=sim.shape, dtype=np.float32)


class ItemKNN(RecModel):
    kind: ClassVar[str] = "itemknn"
    _arrays: ClassVar[tuple[str, ...]] = ("sim_data", "sim_indices", "sim_indptr")

    def __init__(self, k: int = 100, shrink: float = 0.0, **params) -> None:
        super().__init__(k=int(k), shrink=float(shrink), **params)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        if matrix.shape[1] > MAX_ITEMS:
            raise DataError(
                f"ItemKNN builds a dense {matrix.shape[1]}×{matrix.shape[1]} similarity; more than {MAX_ITEMS} "
                "items is too large for this machine: train --models als,pop instead",
                where="train --models itemknn",
            )
        self.fit_from_similarity(cosine_similarity(matrix, self.params["shrink"]))

    def fit_from_similarity(self, sim: np.ndarray) -> None:
        """Keep the top-k neighbours of a precomputed similarity (tuning k reuses one)."""
        self.similarity = keep_top_neighbours(sim, self.params["k"])

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.asarray((histories @ self.similarity).todense())

    def _similarity_row(self, item_index: int) -> np.ndarray:
        return np.asarray(self.similarity[:, item_index].todense()).ravel()

    @property
    def sim_data(self) -> np.ndarray:
        return self.similarity.data

    @property
    def sim_indices(self) -> np.ndarray:
        return self.similarity.indices

    @property
    def sim_indptr(self) -> np.ndarray:
        return self.similarity.indptr

    def _load_weights(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(self.items)
        self.similarity = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]), shape=(n, n)
        )
