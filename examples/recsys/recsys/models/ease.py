"""EASE (Steck, 2019): a closed-form item-item linear model.

B = I - P · diag(1 / diag(P)) with P = (XᵀX + λI)⁻¹, so the diagonal of B is
zero and a user's scores are their binary history times B. One dense
symmetric inverse per fit (Cholesky, float64), stored as float32.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recsys.models.recommenders import RecModel

# Dense n_items² float64 Gram matrix: 15,000 items is already 1.8 GB.
MAX_ITEMS = 15_000


class EASE(RecModel):
    kind: ClassVar[str] = "ease"
    _arrays: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(self, l2: float = 300.0, **params) -> None:
        super().__init__(l2=float(l2), **params)
        self.weights = np.zeros((0, 0), np.float32)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        n_items = matrix.shape[1]
        if n_items > MAX_ITEMS:
            raise ValueError(
                f"EASE needs a dense {n_items}×{n_items} matrix; more than {MAX_ITEMS} items "
                "is too large for this machine, train als/itemknn/pop instead"
            )
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices(n_items)] += self.params["l2"]
        # Symmetric positive definite: invert through Cholesky (about twice as fast as LU).
        factor, info = scipy.linalg.lapack.dpotrf(gram, lower=False, overwrite_a=True)
        if info != 0:
            raise ValueError(f"EASE Gram matrix is not positive definite (lapack info {info}); raise l2")
        inverse, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise ValueError(f"EASE inverse failed (lapack info {info})")
        inverse = np.triu(inverse) + np.triu(inverse, 1).T
        weights = inverse / (-np.diag(inverse))
        weights[np.diag_indices(n_items)] = 0.0
        self.weights = weights.astype(np.float32)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.asarray(histories @ self.weights)

    def _similarity_row(self, item_index: int) -> np.ndarray:
        return self.weights[item_index]
