"""RecBole's general-recommendation protocol and metrics.

- Split: random 8:1:1 per user, seeded (:mod:`recsys.splits`); every rating
  is an interaction (no threshold), as in RecBole's ML-100K quick start.
- Hyperparameters: each grid point is fit on *train* and ranked on *valid*
  (train items excluded); the best by NDCG@10 wins.
- Test: full ranking over all items, excluding the user's train and valid
  items (RecBole's test-phase history). With ``refit=True`` (our default)
  the chosen configuration is refit on train+valid before testing; with
  ``refit=False`` the model trained on train alone is tested, exactly as
  RecBole does. Both are reported.
- Metrics at 10, averaged over users with at least one test item:
  Recall = hits / |test items of the user|; NDCG with binary relevance and
  ideal DCG over min(|test|, 10) positions; MRR = 1 / rank of the first hit
  (0 without one); Hit = 1 if any test item is in the top 10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.interactions import IdMap, Interactions, interaction_matrix
from recsys.models import make_model
from recsys.splits import split_by_user

K = 10
METRICS = ("recall", "ndcg", "mrr", "hit")

# /work/shared/data/README.md: RecBole BPR quick start on ML-100K, test set, @10.
RECBOLE_ML100K = {
    "RecBole BPR (README)": {"recall": 0.2368, "ndcg": 0.2768, "mrr": 0.4519, "hit": 0.7614},
    "RecBole BPR (docs)": {"recall": 0.2523, "ndcg": 0.2920, "mrr": 0.4855, "hit": 0.7953},
}

GRIDS: dict[str, list[dict[str, Any]]] = {
    "kernel": [{"l2": v, "power": p} for p in (1.0, 2.0) for v in (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)],
    "ease": [{"l2": v} for v in (100.0, 200.0, 300.0, 500.0, 800.0)],
    "als": [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f in (16, 32, 48) for r in (5.0, 20.0) for a in (3.0,)],
    "itemknn": [{"k": k, "shrink": s} for k in (20, 50, 100, 200) for s in (0.0, 10.0)],
    "pop": [{}],
}


# Large datasets: a full-ranking evaluation scores every user against every item for every grid point
# (ML-20M's shape: 138k × 27k per λ), so above these sizes the defaults change (docs/recsys.md#large-datasets).
LARGE_USERS = 20_000  # above this many users, validation and test rank a seeded sample of users
SAMPLED_USERS = 2_000
LARGE_INTERACTIONS = 5_000_000  # above this many interactions, one split seed instead of three


def default_eval_users(n_users: int) -> int:
    """Users ranked in validation and test by default: 0 (all of them) unless the dataset is large."""
    return SAMPLED_USERS if n_users > LARGE_USERS else 0


def default_seeds(n_interactions: int) -> list[int]:
    return [0] if n_interactions > LARGE_INTERACTIONS else [0, 1, 2]


@dataclass(frozen=True)
class Split:
    users: IdMap
    items: IdMap
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    seed: int


def make_split(data: Interactions, seed: int) -> Split:
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    train, valid, test = split_by_user(data, (0.8, 0.1, 0.1), seed)
    return Split(users, items, *(interaction_matrix(data.subset(p), users, items) for p in (train, valid, test)),
                 seed=seed)


def evaluation_rows(split: Split, eval_users: int) -> np.ndarray | None:
    """The user rows validation and test rank: None for all of them (``eval_users`` 0 or at least the number of
    users), else a sample of ``eval_users`` rows drawn with the split's seed, in row order."""
    n_users = split.train.shape[0]
    if eval_users <= 0 or eval_users >= n_users:
        return None
    rng = np.random.default_rng([split.seed, 0x5EED])
    return np.sort(rng.choice(n_users, eval_users, replace=False))


def top_k(model, inputs: sp.csr_matrix, exclude: sp.csr_matrix, k: int = K, batch: int | None = None) -> np.ndarray:
    """Item indices of each row's top ``k``, scored from ``inputs``, with ``exclude`` items removed."""
    out = np.zeros((inputs.shape[0], k), np.int64)
    batch = batch or max(1, min(4096, 16_000_000 // max(1, inputs.shape[1])))  # ≤ 128 MB of float64 scores
    for start in range(0, inputs.shape[0], batch):
        stop = min(start + batch, inputs.shape[0])
        scores = np.array(model.score_matrix(inputs[start:stop]), dtype=np.float64)
        block = exclude[start:stop].tocoo()
        scores[block.row, block.col] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def ranking_metrics(top: np.ndarray, truth: sp.csr_matrix, k: int = K) -> dict[str, float]:
    """Mean Recall/NDCG/MRR/Hit@k over rows with at least one true item."""
    truth = sp.csr_matrix(truth)
    n_true = np.diff(truth.indptr)
    rows = np.flatnonzero(n_true > 0)
    if len(rows) == 0:
        return {m: 0.0 for m in METRICS} | {"users": 0}
    hits = np.zeros((len(rows), k), bool)
    for out, row in enumerate(rows):
        hits[out] = np.isin(top[row, :k], truth.indices[truth.indptr[row]:truth.indptr[row + 1]])
    n = n_true[rows]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n, k) - 1]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "recall": float((hits.sum(axis=1) / n).mean()),
        "ndcg": float((dcg / idcg).mean()),
        "mrr": float((1.0 / first).mean()),
        "hit": float(hits.any(axis=1).mean()),
        "users": int(len(rows)),
    }


def fit(kind: str, params: dict[str, Any], matrix: sp.csr_matrix, users: IdMap, items: IdMap, *,
        seed: int = 0, threads: int = 0):
    extra: dict[str, Any] = {"seed": seed, "threads": threads} if kind == "als" else {}
    return make_model(kind, **params, **extra).fit(matrix, users, items)


def _grid_models(kind: str, grid: list[dict[str, Any]], split: Split, threads: int):
    """(position in ``grid``, params, model fitted on train) for each grid point, one model at a time.

    ItemKNN's points that share a shrinkage share one similarity matrix (only the neighbours kept
    differ), so its grid costs one similarity per shrinkage, not one per point; they come grouped
    by shrinkage, so only one n × n matrix is held at a time. The kernel model's points likewise share one
    eigendecomposition of each kernel per damping."""
    if kind == "ease":
        from recsys.memory_budgets import check_fit
        from recsys.models.accelerators import find_accelerator
        from recsys.models.ease import FactorScores

        on_device = find_accelerator() is not None  # then each point is a whole fit there (about a second)
        for position, params in enumerate(grid):
            model = make_model(kind, **params)
            check_fit(kind, n_items=split.train.shape[1], n_users=split.train.shape[0], nnz=split.train.nnz,
                      params=model.params)
            scores = None if on_device else FactorScores.fit(split.train, model.params["l2"])
            fitted = scores if scores is not None else model.fit(split.train, split.users, split.items)
            del scores, model
            yield position, params, fitted
            # this frame must not hold the n × n arrays while the next point is fitted: that doubles the peak
            del fitted
        return
    if kind == "kernel":  # one eigendecomposition of each kernel serves every point of a damping
        from recsys.memory_budgets import check_fit
        from recsys.models.kernel_ridge import KernelRidge, KernelSpectra

        check_fit(kind, n_items=split.train.shape[1], n_users=split.train.shape[0], nnz=split.train.nnz)
        points = [(position, params, make_model(kind, **params).params["damping"])
                  for position, params in enumerate(grid)]
        for damping in dict.fromkeys(point[2] for point in points):
            spectra = KernelSpectra.of(split.train, damping)
            for position, params, _damping in (point for point in points if point[2] == damping):
                fitted = KernelRidge.from_spectra(spectra, split.train, split.users, split.items, **params)
                yield position, params, fitted
                del fitted
            del spectra
        return
    if kind != "itemknn":
        for position, params in enumerate(grid):
            yield position, params, fit(kind, params, split.train, split.users, split.items, seed=split.seed,
                                        threads=threads)
        return
    from recsys.memory_budgets import check_fit
    from recsys.models.itemknn import cosine_similarity

    points = [(position, params, make_model(kind, **params).params) for position, params in enumerate(grid)]
    for shrink in dict.fromkeys(normalised["shrink"] for _, _, normalised in points):
        group = [point for point in points if point[2]["shrink"] == shrink]
        check_fit(kind, n_items=split.train.shape[1], n_users=split.train.shape[0], nnz=split.train.nnz,
                  params=group[0][2])
        similarity = cosine_similarity(split.train, shrink)
        for position, params, _normalised in group:
            fitted = make_model(kind, **params).fit_from_similarity(similarity, split.train, split.users, split.items)
            yield position, params, fitted
            del fitted  # nothing here keeps a fitted point once the caller is done with it
        del similarity


def _rows(matrix: sp.csr_matrix, rows: np.ndarray | None) -> sp.csr_matrix:
    return matrix if rows is None else matrix[rows]


def tune(kind: str, split: Split, grid: list[dict[str, Any]] | None = None, *, threads: int = 0,
         rows: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """Fit every grid point on train, rank on valid (the users in ``rows``, all if None); best by NDCG@10."""
    trials = []
    inputs, truth = _rows(split.train, rows), _rows(split.valid, rows)
    for position, params, model in _grid_models(kind, grid if grid is not None else GRIDS[kind], split, threads):
        valid = ranking_metrics(top_k(model, inputs, inputs), truth)
        trials.append({"position": position, "params": params, "valid": valid})
        del model
    trials.sort(key=lambda t: t["position"])  # ties go to the first point of the grid, as in grid order
    best = max(trials, key=lambda t: t["valid"]["ndcg"])
    return best["params"], best["valid"], trials


def evaluate_kind(kind: str, split: Split, *, grid: list[dict[str, Any]] | None = None, refit: bool = True,
                  threads: int = 0, eval_users: int = 0) -> dict[str, Any]:
    """Tune on valid, then test (refit on train+valid, or the train-only model); validation and test rank
    ``eval_users`` sampled users (:func:`evaluation_rows`; 0: all)."""
    rows = evaluation_rows(split, eval_users)
    params, valid, trials = tune(kind, split, grid, threads=threads, rows=rows)
    seen = split.train + split.valid
    seen.data[:] = 1.0
    started = time.perf_counter()
    if refit:
        model = fit(kind, params, seen, split.users, split.items, seed=split.seed, threads=threads)
    else:
        model = fit(kind, params, split.train, split.users, split.items, seed=split.seed, threads=threads)
    fit_s = time.perf_counter() - started
    inputs = seen if refit else split.train
    test = ranking_metrics(top_k(model, _rows(inputs, rows), _rows(seen, rows)), _rows(split.test, rows))
    return {"model": kind, "seed": split.seed, "params": params, "valid": valid, "test": test,
            "fit_s": fit_s, "refit": refit, "trials": len(trials),
            "eval_users": int(len(rows)) if rows is not None else int(split.train.shape[0]),
            "grid": [{"params": t["params"], "valid_ndcg": t["valid"]["ndcg"],
                      "valid": {m: t["valid"][m] for m in METRICS}} for t in trials]}


def mean_over_seeds(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{model: {metric: mean, metric_std: std, fit_s: mean}} over the seeds run."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_model.setdefault(result["model"], []).append(result)
    summary: dict[str, dict[str, float]] = {}
    for model, runs in by_model.items():
        row: dict[str, float] = {"seeds": len(runs), "fit_s": float(np.mean([r["fit_s"] for r in runs]))}
        for metric in METRICS:
            values = [r["test"][metric] for r in runs]
            row[metric] = float(np.mean(values))
            row[f"{metric}_std"] = float(np.std(values))
        summary[model] = row
    return summary
