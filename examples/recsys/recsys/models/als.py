"""Implicit-feedback ALS (Hu, Koren & Volinsky, 2008) through the ``implicit``
library. Any history (a known user's or a cold user's) is scored by folding
it in: one regularised least-squares solve against the item factors, the same
update ALS itself applies to user factors."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.models.recommenders import RecModel

log = logging.getLogger(__name__)


class ALS(RecModel):
    kind: ClassVar[str] = "als"
    _arrays: ClassVar[tuple[str, ...]] = ("item_factors",)

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, threads: int = 0, **params) -> None:
        super().__init__(factors=int(factors), regularization=float(regularization), alpha=float(alpha),
                         iterations=int(iterations), seed=int(seed), **params)
        self.threads = int(threads)
        self.item_factors = np.zeros((0, 0), np.float32)
        self._gram = np.zeros((0, 0))
        self._norms = np.zeros(0)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        p = self.params
        if self._fit_on_gpu(matrix):
            return
        # implicit runs its own threads; OpenBLAS's pool inside them only contends.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
                iterations=p["iterations"], random_state=p["seed"], num_threads=self.threads,
            )
            model.fit(matrix, show_progress=False)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self._restored()

    def _fit_on_gpu(self, matrix: sp.csr_matrix) -> bool:
        """``implicit``'s CUDA ALS when the job sees a GPU (``recsys.models.accelerators``) and ``implicit`` was
        built with CUDA; False (the CPU fit) otherwise."""
        from recsys.models.accelerators import find_accelerator

        accelerator = find_accelerator()
        if accelerator is None or accelerator.device != "cuda":
            return False
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            log.warning("a GPU is visible but implicit was built without CUDA: ALS fits on the CPU")
            return False
        from implicit.gpu.als import AlternatingLeastSquares

        p = self.params
        model = AlternatingLeastSquares(factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
                                        iterations=p["iterations"], random_state=p["seed"])
        model.fit(matrix, show_progress=False)
        self.item_factors = np.asarray(model.to_cpu().item_factors, dtype=np.float32)
        self.fitted_on = "implicit on cuda"
        self._restored()
        return True

    def _restored(self) -> None:
        y = self.item_factors.astype(np.float64)
        self._gram = y.T @ y
        norms = np.linalg.norm(y, axis=1)
        self._norms = np.where(norms > 0, norms, 1.0)

    def user_factors(self, histories: sp.csr_matrix) -> np.ndarray:
        """Fold-in: solve (YᵀY + (c-1)·Y_hᵀY_h + λI) u = c·Σ_h y for each row, c = alpha."""
        y = self.item_factors.astype(np.float64)
        f = y.shape[1]
        c = self.params["alpha"]
        base = self._gram + self.params["regularization"] * np.eye(f)
        out = np.zeros((histories.shape[0], f))
        for row in range(histories.shape[0]):
            seen = histories.indices[histories.indptr[row]:histories.indptr[row + 1]]
            if len(seen) == 0:
                continue
            ys = y[seen]
            out[row] = np.linalg.solve(base + (c - 1.0) * (ys.T @ ys), c * ys.sum(axis=0))
        return out

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return (self.user_factors(sp.csr_matrix(histories)) @ self.item_factors.T.astype(np.float64)).astype(np.float32)

    def _similarity_row(self, item_index: int) -> np.ndarray:
        y = self.item_factors.astype(np.float64)
        return (y @ y[item_index]) / (self._norms * self._norms[item_index])
