"""Popularity baseline: every user gets the most-interacted items they have not seen."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.models.recommenders import RecModel


class Popularity(RecModel):
    kind: ClassVar[str] = "pop"
    _arrays: ClassVar[tuple[str, ...]] = ("counts",)

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.counts = np.zeros(0, np.float32)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        self.counts = np.asarray(matrix.sum(axis=0), dtype=np.float32).ravel()

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.counts, (histories.shape[0], len(self.counts))).copy()

    def _similarity_row(self, item_index: int) -> np.ndarray:
        return self.counts
