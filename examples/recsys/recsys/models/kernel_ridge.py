"""Kernel ridge regression of the interaction matrix on users × items, with neural tangent kernels.

Users are compared by the neural tangent kernel (NTK) of a one-hidden-layer ReLU network on their
L2-normalised histories, as the infinite-width autoencoder does (∞-AE: Sachdeva, Dhaliwal, Wu and
McAuley, "Infinite Recommendation Networks", NeurIPS 2022); items are compared the same way by their
columns. Before the normalisation each item in a history weighs ``count ** -damping`` (its number of
users), and each user in an item's column likewise by their number of items: inverse-popularity
weighting as in IDF, so that sharing a niche item says more than sharing a blockbuster (0 gives the
binary histories of ∞-AE). The scores regress X on the product kernel K_u ⊗ K_i, so a user's score for an item
draws on similar users' interactions with similar items. With K_u = U·diag(a)·Uᵀ and K_i =
V·diag(b)·Vᵀ::

    S = U · (F ∘ (Uᵀ X V)) · Vᵀ,      F = (a bᵀ)ᵖ / ((a bᵀ)ᵖ + l2ᵖ)

``power`` 1 is exactly kernel ridge regression; 2 is a sharper low-pass of the same spectrum. One
eigendecomposition of each kernel (:class:`KernelSpectra`) serves every (l2, power) of the grid.

Any history x (a known user's with new events, or a new user's) is scored as k_u(x, users) · W with
W = U · (F / a ∘ Uᵀ X V) · Vᵀ (users × items), which gives back S for every training user: the
serving path needs W, the training histories and one kernel row, never an eigendecomposition. A fit
also keeps S itself (``known_scores``), so a known user with no new events costs one row's copy.

Cost: the fit eigendecomposes a users × users and an items × items kernel (O(n³) each) and each grid point
multiplies through both (O(users · items · (users + items))), so ``train`` trains it by default only within
:func:`default_refusal`'s limits; its memory is in ``recsys.memory_budgets``. W holds users × items float32
for serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recsys.models.recommenders import RecModel

DEFAULT_MAX_SIDE = 8_000
"""``train`` fits the kernel model by default only when users and items are both at most this many: one
float32 eigendecomposition of 8,000 × 8,000 took 31.8 s on one core here, and a seed needs four
(bench/recsys_kernel_cost.py)"""
DEFAULT_MAX_PRODUCT = 2.5e11
"""... and when users × items × (users + items), the multiply-adds of one of W's two products, is at most
this: ML-1M's shape (6,040 × 3,706) is 2.2·10¹¹, and a seed of it took 162-184 s on one core here, 11.2-11.3×
EASE's (bench/recsys_kernel_cost.py)"""

DEFAULT_DAMPING = 0.25
"""Inverse-popularity weighting of the kernels' features, count ** -damping. 0.25 had the best validation
NDCG@10 of {0, 0.25, 0.5}, averaged over the three datasets of bench/recsys_kernel_damping.py (chosen on
validation; that bench prints the test figures beside it)"""


def default_refusal(n_users: int, n_items: int) -> str | None:
    """Why ``train`` leaves the kernel model out of its defaults on this shape, or None when it fits them."""
    side = max(n_users, n_items)
    if side > DEFAULT_MAX_SIDE:
        return (f"its fit eigendecomposes a {side:,} × {side:,} kernel (more than {DEFAULT_MAX_SIDE:,} users or "
                "items)")
    work = float(n_users) * n_items * (n_users + n_items)
    if work > DEFAULT_MAX_PRODUCT:
        return (f"each grid point costs two products of {work:.1e} multiply-adds (users × items × (users + "
                f"items); more than {DEFAULT_MAX_PRODUCT:.1e})")
    return None


def ntk_of_cosines(cosines: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """The one-hidden-layer ReLU NTK of unit vectors from their cosines (float64; a float64 ``cosines`` is
    overwritten).

    Θ(c) = c·(π − θ)/(2π) + (sin θ + (π − θ)·c)/(2π), θ = arccos c; Θ(1) = 1. ``present`` (bool, same
    shape) marks the pairs of nonzero vectors: the others get 0, the kernel of an empty history."""
    c = np.array(cosines, dtype=np.float64, copy=None, ndmin=1)
    np.clip(c, -1.0, 1.0, out=c)
    rest = np.arccos(c)
    np.subtract(np.pi, rest, out=rest)  # π − θ
    kernel = np.sin(rest)  # sin θ = sin(π − θ)
    rest *= c
    rest *= 2.0
    kernel += rest
    kernel /= 2.0 * np.pi
    if present is not None:
        kernel[~present] = 0.0
    return kernel


def ntk_of_overlaps(overlaps: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """The NTK of vectors from their dot products (for binary ones, the items they share; weighted, the sum of
    the shared weights²) and the products of their lengths; 0 where either is empty (a norm of 0). Neither
    argument is kept."""
    present = norms > 0
    return ntk_of_cosines(np.divide(overlaps, norms, out=np.zeros(np.shape(norms)), where=present), present)


def feature_weights(matrix: sp.csr_matrix, damping: float) -> np.ndarray:
    """Each column's weight in the rows of a binary matrix: its count of nonzeros ** -damping (float64; an
    empty column counts as 1)."""
    counts = np.bincount(sp.csr_matrix(matrix).indices, minlength=matrix.shape[1]).astype(np.float64)
    return np.maximum(counts, 1.0) ** -float(damping)


def self_kernel(matrix: sp.csr_matrix, damping: float = 0.0) -> np.ndarray:
    """The NTK between every pair of rows of a binary matrix, each column weighted by
    :func:`feature_weights` (dense, float64)."""
    matrix = sp.csr_matrix(matrix)
    weighted = sp.csr_matrix((feature_weights(matrix, damping)[matrix.indices], matrix.indices, matrix.indptr),
                             shape=matrix.shape)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    present = norms > 0
    unit = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=present)) @ weighted
    cosines = np.asarray(unit @ unit.T.toarray())  # dense at once: the sparse product may be as dense
    return ntk_of_cosines(cosines, np.outer(present, present))


def _eigh(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of a symmetric matrix, overwriting it (LAPACK's divide and conquer)."""
    return scipy.linalg.eigh(kernel, overwrite_a=True, check_finite=False, driver="evd")


def _filter(products: np.ndarray, l2: float, power: float) -> np.ndarray:
    if power == 1.0:
        return products / (products + l2)
    raised = products ** power
    return raised / (raised + l2 ** power)


@dataclass(frozen=True)
class KernelSpectra:
    """The eigendecompositions of one training matrix's two kernels, and Uᵀ X V: what every grid point shares."""

    user_values: np.ndarray  # a, clipped at 0 (the kernel is positive semi-definite; rounding is not)
    user_vectors: np.ndarray  # U, float32 (so are the products for W)
    item_values: np.ndarray  # b
    item_vectors: np.ndarray  # V, float32
    projected: np.ndarray  # Uᵀ X V
    damping: float

    @classmethod
    def of(cls, matrix: sp.csr_matrix, damping: float) -> KernelSpectra:
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        # float32: LAPACK's ssyevd takes about a third of dsyevd's time here, and the filter needs no more
        a, u = _eigh(self_kernel(matrix, damping).astype(np.float32))
        b, v = _eigh(self_kernel(sp.csr_matrix(matrix.T), damping).astype(np.float32))
        projected = (u.T @ np.asarray(matrix @ v)).astype(np.float64)
        return cls(np.maximum(a.astype(np.float64), 0.0), u, np.maximum(b.astype(np.float64), 0.0), v, projected,
                   float(damping))

    def weights(self, l2: float, power: float) -> np.ndarray:
        """W (users × items, float32) for one grid point."""
        products = np.outer(self.user_values, self.item_values)
        scaled = _filter(products, l2, power)
        scale = np.divide(1.0, self.user_values, out=np.zeros_like(self.user_values),
                          where=self.user_values > 1e-12)
        scaled *= scale[:, None]
        scaled *= self.projected
        # float32 products: half the time of float64's, and W is kept in float32 anyway
        return self.user_vectors @ scaled.astype(np.float32) @ self.item_vectors.T


class KernelRidge(RecModel):
    kind: ClassVar[str] = "kernel"
    _arrays: ClassVar[tuple[str, ...]] = ("weights", "known_scores")

    def __init__(self, l2: float = 4.0, power: float = 1.0, damping: float = DEFAULT_DAMPING, **params) -> None:
        if float(l2) <= 0:
            raise ValueError(f"kernel: l2 must be positive, got {l2}")
        if float(power) <= 0:
            raise ValueError(f"kernel: power must be positive, got {power}")
        if not 0 <= float(damping) <= 2:
            raise ValueError(f"kernel: damping must be between 0 and 2, got {damping}")
        super().__init__(l2=float(l2), power=float(power), damping=float(damping), **params)
        self.weights = np.zeros((0, 0), np.float32)
        self.known_scores = np.zeros((0, 0), np.float32)  # S, kept by a fit for serving (not by tuning's points)
        self._history64 = sp.csr_matrix((0, 0))
        self._by_item = sp.csc_matrix((0, 0))  # the history, column j times item j's weight² (float64)
        self._item_weights2 = np.zeros(0)  # each item's weight² in user vectors
        self._user_weights2 = np.zeros(0)  # each user's weight² in item vectors
        self._user_norms2 = np.zeros(0)  # each training user's weighted length²
        self._item_norms2 = np.zeros(0)  # each item's weighted length²

    def _fit(self, matrix: sp.csr_matrix) -> None:
        self.use_spectra(KernelSpectra.of(matrix, self.params["damping"]))
        # Serving's common case is a known user with no new events: keep S, their scores, so that such a
        # request reads one row instead of scoring the history (users × items float32, as much as W)
        self.known_scores = np.vstack([self.score_matrix(self._history[start:start + 1024])
                                       for start in range(0, self._history.shape[0], 1024)])

    def use_spectra(self, spectra: KernelSpectra) -> KernelRidge:
        """Take W from ``spectra`` (of the bound training matrix) for this model's params."""
        if spectra.damping != self.params["damping"]:
            raise ValueError(f"kernel: spectra of damping {spectra.damping} for a model of damping "
                             f"{self.params['damping']}")
        self.weights = spectra.weights(self.params["l2"], self.params["power"])
        self._restored()
        return self

    @classmethod
    def from_spectra(cls, spectra: KernelSpectra, matrix: sp.csr_matrix, users, items, **params) -> KernelRidge:
        """A fitted model for one grid point, sharing the spectra of ``matrix`` (tuning)."""
        model = cls(**params)
        model._bind(sp.csr_matrix(matrix, dtype=np.float32), users, items)
        return model.use_spectra(spectra)

    @classmethod
    def _restore(cls, directory, params):
        # artifacts from before ``damping`` existed compared binary histories
        return super()._restore(directory, {"damping": 0.0, **params})

    def _restored(self) -> None:
        history = sp.csr_matrix(self._history, dtype=np.float64)
        damping = self.params["damping"]
        self._item_weights2 = feature_weights(history, damping) ** 2
        self._user_weights2 = feature_weights(sp.csr_matrix(history.T), damping) ** 2
        # float64 throughout: the NTK's slope is infinite at cosine 1 (a history against itself), where
        # float32's rounding of a weighted cosine moves the kernel by about 1e-4
        self._history64 = history  # the ones, for score_history (its index arrays are shared)
        self._by_item = sp.csc_matrix(history @ sp.diags(self._item_weights2))
        self._user_norms2 = history @ self._item_weights2
        self._item_norms2 = history.T @ self._user_weights2

    def _user_kernel(self, histories: sp.csr_matrix) -> np.ndarray:
        """k_u(each history, every training user): histories × users."""
        histories = sp.csr_matrix(histories, dtype=np.float64)
        histories.data[:] = 1.0
        overlaps = np.asarray((histories @ self._by_item.T).todense(), dtype=np.float64)
        lengths2 = histories @ self._item_weights2
        return ntk_of_overlaps(overlaps, np.sqrt(np.outer(lengths2, self._user_norms2)))

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._user_kernel(histories).astype(np.float32) @ self.weights

    def score_history(self, seen: np.ndarray) -> np.ndarray:
        indicator = np.zeros(self._history.shape[1])
        indicator[seen] = self._item_weights2[seen]
        overlaps = self._history64 @ indicator  # one pass over the training histories, in C
        # k_u(x) · W as a one-row CSR times the dense W: scipy's C loop, no BLAS call. Requests are scored on
        # concurrent threads, and BLAS's own threads under them only contend (with two OpenBLAS threads at
        # concurrency 8, p99 284 ms against 9.40-10.28 ms this way: bench/recsys.py --model kernel)
        length2 = float(indicator.sum())  # the history's weighted length², a repeated item counted once
        kernel = ntk_of_overlaps(overlaps, np.sqrt(length2 * self._user_norms2)).astype(np.float32)
        row = sp.csr_matrix((kernel, np.arange(len(kernel), dtype=np.int32), np.array([0, len(kernel)], np.int32)),
                            shape=(1, len(kernel)))
        return np.asarray(row @ self.weights).reshape(-1)

    def _training_user_scores(self, row: int) -> np.ndarray | None:
        return self.known_scores[row].copy() if len(self.known_scores) else None

    def _similarity_row(self, item_index: int) -> np.ndarray:
        """The item kernel's row: the NTK between this item's users and every item's."""
        start, end = self._by_item.indptr[item_index], self._by_item.indptr[item_index + 1]
        users = self._by_item.indices[start:end]
        weighted = np.zeros(self._history.shape[0])
        weighted[users] = self._user_weights2[users]
        overlaps = np.asarray(self._history64.T @ weighted).ravel()
        return ntk_of_overlaps(overlaps, np.sqrt(self._item_norms2 * self._item_norms2[item_index]))
