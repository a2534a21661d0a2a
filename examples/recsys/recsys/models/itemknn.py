"""ItemKNN: cosine item-item similarity (with shrinkage), keeping each item's
``k`` nearest neighbours; a user's score for item j sums the similarities of
j's neighbours in their history.

The dense similarity is the Gram matrix normalised in place and its top k
are picked a block of columns at a time, so the fit's peak is one n × n
float32 array plus a block (``recsys.memory_budgets``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.memory_budgets import block_rows
from recsys.models.grams import dense_gram
from recsys.models.recommenders import RecModel


def cosine_similarity(matrix: sp.csr_matrix, shrink: float = 0.0) -> np.ndarray:
    """Dense item × item cosine similarity of a binary user × item matrix, zero diagonal (float32, in place)."""
    sim = dense_gram(matrix, np.float32)
    n = sim.shape[0]
    norms = np.sqrt(np.diag(sim)).astype(np.float32)
    step = block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        denominator = np.outer(norms[start:stop], norms)
        denominator += shrink  # the same two float32 roundings as co / (outer + shrink + 1e-12)
        denominator += 1e-12
        sim[start:stop] /= denominator
    np.fill_diagonal(sim, 0.0)
    return sim


def keep_top_neighbours(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """Sparse copy of ``sim`` keeping, for each column j, its ``k`` largest (positive) entries.

    A block of columns at a time: one negated copy of the block and argpartition's indices for it,
    never n × n of them."""
    n = sim.shape[0]
    k = max(1, min(k, n - 1)) if n > 1 else 0
    if k == 0:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    rows = np.empty((n, k), np.int32)  # rows[j]: column j's neighbours
    values = np.empty((n, k), np.float32)
    step = block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        negated = np.empty((stop - start, n), np.float32)
        np.negative(sim[:, start:stop].T, out=negated)
        part = np.argpartition(negated, k - 1, axis=1)[:, :k]
        rows[start:stop] = part
        values[start:stop] = -np.take_along_axis(negated, part, axis=1)
        del negated, part
    keep = values > 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    by_column = sp.csc_matrix((values[keep], rows[keep], indptr), shape=sim.shape)
    return by_column.tocsr()


class ItemKNN(RecModel):
    kind: ClassVar[str] = "itemknn"
    linear_in_history: ClassVar[bool] = True
    _arrays: ClassVar[tuple[str, ...]] = ("sim_data", "sim_indices", "sim_indptr")

    def __init__(self, k: int = 100, shrink: float = 0.0, **params) -> None:
        super().__init__(k=int(k), shrink=float(shrink), **params)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        # RecModel.fit has checked the fit against the memory available (memory_budgets.check_fit).
        self.similarity = keep_top_neighbours(cosine_similarity(matrix, self.params["shrink"]), self.params["k"])

    def fit_from_similarity(self, sim: np.ndarray, matrix: sp.csr_matrix, users, items) -> ItemKNN:
        """The same model as ``fit(matrix, users, items)``, given ``cosine_similarity(matrix, shrink)``
        already computed: tuning k reuses one similarity. ``sim`` is only read."""
        self._bind(sp.csr_matrix(matrix, dtype=np.float32), users, items)
        self.similarity = keep_top_neighbours(sim, self.params["k"])
        return self

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
