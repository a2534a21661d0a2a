"""EASE (Steck, 2019): a closed-form item-item linear model.

B = I - P · diag(1 / diag(P)) with P = (XᵀX + λI)⁻¹, so the diagonal of B is
zero and a user's scores are their binary history times B. One dense
symmetric inverse per fit, in float32 end to end and in place: the Gram
matrix is built into one n × n array (``recsys.models.grams``), Cholesky
(``potrf``) and the inverse (``potri``) overwrite it, its triangle is
mirrored and its columns scaled into the weights, so the fit's peak is that
one array plus a block (``recsys.memory_budgets``: 4n² bytes and a little).
Only if the float32 Cholesky fails (a tiny λ) is it redone in float64, and
only if that (12n² bytes) fits the memory the job has.

Tuning λ needs only the scores of the validation users, not B itself:
:class:`FactorScores` keeps W = U⁻¹ from the Cholesky factor (P = W·Wᵀ), so
X·B = X − (X·W)·Wᵀ / diag(P) costs two triangular products per batch, the
same flops as the dense product with B, and the fit skips the second half of
the inverse (``lauum``), the mirroring and the scaling: about a third of a
fit, measured in bench/recsys_training.py.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from lichen import DataError

from recsys import memory_budgets
from recsys.models import accelerators
from recsys.models.grams import dense_gram
from recsys.models.recommenders import RecModel


log = logging.getLogger(__name__)


def _diagonal(a: np.ndarray) -> np.ndarray:
    """A writable view of the diagonal of a C-contiguous square array."""
    return a.reshape(-1)[:: a.shape[0] + 1]


def _mirror_lower(a: np.ndarray) -> None:
    """Copy the lower triangle of a C-contiguous square array onto its upper one, in place, a block at a time."""
    n = a.shape[0]
    step = memory_budgets.block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        a[start:stop, stop:] = a[stop:, start:stop].T  # disjoint memory: no temporary
        block = a[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        block[upper] = block.T[upper]


def _ease_weights(gram: np.ndarray, l2: float, potrf, potri) -> np.ndarray | None:
    """B = -P / diag(P) with zero diagonal, P = (gram + l2·I)⁻¹, all in ``gram``'s memory; None if not PD.

    ``gram`` is symmetric and C-contiguous, so ``gram.T`` is the same matrix in Fortran order and
    LAPACK works on it without a copy; its upper triangle (Fortran's) is ``gram``'s lower one."""
    _diagonal(gram)[:] += l2
    factor, info = potrf(gram.T, lower=False, overwrite_a=True)
    if info != 0:
        return None
    inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        return None
    if not np.shares_memory(inverse, gram):  # LAPACK copied after all: carry on in its array
        gram = np.ascontiguousarray(inverse.T)
    _mirror_lower(gram)
    gram /= -_diagonal(gram).copy()  # column j divided by -P[j, j]
    _diagonal(gram)[:] = 0.0
    return gram


class EASE(RecModel):
    kind: ClassVar[str] = "ease"
    linear_in_history: ClassVar[bool] = True
    _arrays: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(self, l2: float = 300.0, **params) -> None:
        super().__init__(l2=float(l2), **params)
        self.weights = np.zeros((0, 0), np.float32)

    def _fit(self, matrix: sp.csr_matrix) -> None:
        # RecModel.fit has checked the float32 fit against the memory available (memory_budgets.check_fit).
        l2 = self.params["l2"]
        self.fitted_on = "cpu"
        accelerator = accelerators.find_accelerator()
        if accelerator is not None:
            need = accelerators.device_bytes(matrix.shape[1])
            if need <= accelerator.free_bytes * (1 - memory_budgets.SAFETY_MARGIN):
                weights = accelerators.ease_weights(dense_gram(matrix, np.float32), l2, accelerator)
                if weights is not None:
                    self.weights, self.fitted_on = weights, str(accelerator)
                    return
                # not positive definite in float32: the CPU path below retries in float64
            else:
                log.warning("EASE on %s items needs %s on %s, %s free: fitting on the CPU", f"{matrix.shape[1]:,}",
                            memory_budgets.format_bytes(need), accelerator,
                            memory_budgets.format_bytes(accelerator.free_bytes))
        weights = _ease_weights(dense_gram(matrix, np.float32), l2,
                                scipy.linalg.lapack.spotrf, scipy.linalg.lapack.spotri)
        if weights is None:  # float32 Cholesky can fail for a tiny l2: retry in float64 if that fits
            self._check_float64_retry(matrix)
            weights64 = _ease_weights(dense_gram(matrix, np.float64), l2,
                                      scipy.linalg.lapack.dpotrf, scipy.linalg.lapack.dpotri)
            if weights64 is None:
                raise DataError(f"EASE's Gram matrix plus l2={l2:g} is not positive definite even in float64; "
                                "raise l2", where=f"{memory_budgets.models_command()} ease")
            weights = weights64.astype(np.float32)
            del weights64
        self.weights = weights

    def _check_float64_retry(self, matrix: sp.csr_matrix) -> None:
        n_users, n_items = matrix.shape
        need = memory_budgets.fit_peak_bytes("ease", n_items, n_users, matrix.nnz, np.float64)
        available = memory_budgets.available_memory()
        if not memory_budgets.fits(need, available.bytes):
            raise DataError(
                f"EASE's float32 Cholesky failed at l2={self.params['l2']:g} (XᵀX + λI is not positive definite "
                f"in float32); the float64 retry on {n_items:,} items needs {memory_budgets.format_bytes(need)}, "
                f"{memory_budgets.format_bytes(available.bytes)} available ({available.limited_by}): raise l2",
                where=f"{memory_budgets.models_command()} ease",
            )

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.asarray(histories @ self.weights)

    def score_history(self, seen: np.ndarray) -> np.ndarray:
        # A binary history times the item-item weights is the sum of the history's rows. A one-row CSR
        # times the dense weights adds them in place in scipy's C loop, with the GIL released: no
        # h × n gathered copy (at 27,278 items, p50 4.61 -> 1.48 ms against weights[seen].sum at
        # concurrency 8: bench/recsys.py --catalogue ml20m, docs/recsys.md).
        seen = np.sort(seen)
        row = sp.csr_matrix((np.ones(len(seen), np.float32), seen.astype(np.int32, copy=False),
                             np.array([0, len(seen)], np.int32)), shape=(1, self.weights.shape[0]))
        return np.asarray(row @ self.weights).reshape(-1)

    def _similarity_row(self, item_index: int) -> np.ndarray:
        return self.weights[item_index]


class FactorScores:
    """EASE's scores for λ from the inverse Cholesky factor alone: a stand-in for a fitted :class:`EASE`
    where only ``score_matrix`` is needed (tuning). Equal to ``EASE(l2).fit(matrix).score_matrix`` up to
    float32 rounding."""

    def __init__(self, inverse_factor: np.ndarray, diagonal: np.ndarray) -> None:
        self._w = inverse_factor  # W = U⁻¹, upper triangular, Fortran order; P = W·Wᵀ
        self._diagonal = diagonal  # diag(P)

    @classmethod
    def fit(cls, matrix: sp.csr_matrix, l2: float) -> FactorScores | None:
        """None when the float32 Cholesky fails (a tiny l2): the caller fits EASE itself, with its retry."""
        gram = dense_gram(matrix, np.float32)
        _diagonal(gram)[:] += l2
        factor, info = scipy.linalg.lapack.spotrf(gram.T, lower=False, overwrite_a=True)
        if info != 0:
            return None
        inverse, info = scipy.linalg.lapack.strtri(factor, lower=False, overwrite_c=True)
        if info != 0:
            return None
        n = inverse.shape[0]
        diagonal = np.empty(n, np.float64)
        step = memory_budgets.block_rows(n)
        for start in range(0, n, step):  # P[j, j] = Σ_k W[j, k]², over the upper triangle only
            stop = min(n, start + step)
            rows = inverse[start:stop, start:]
            upper = np.triu(rows[:, : stop - start])
            diagonal[start:stop] = (np.einsum("ij,ij->i", upper, upper, dtype=np.float64)
                                    + np.einsum("ij,ij->i", rows[:, stop - start:], rows[:, stop - start:],
                                                dtype=np.float64))
        return cls(inverse, diagonal.astype(np.float32))

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        dense = np.asfortranarray(histories.toarray(), dtype=np.float32)
        product = scipy.linalg.blas.strmm(1.0, self._w, dense, side=1, lower=0)  # X·W (dense is kept)
        product = scipy.linalg.blas.strmm(1.0, self._w, product, side=1, lower=0, trans_a=1, overwrite_b=1)
        product /= -self._diagonal  # −X·P / diag(P)
        product += dense  # the diagonal of B is zero: X·B = X − X·P·diag(P)⁻¹
        return product
