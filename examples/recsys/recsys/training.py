"""Training: tune each model on the validation split, test it, refit it on the
whole dataset for serving, register it in Lichen's model registry, and
promote the best by validation NDCG@10 (never by test: that would leak)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lichen import ModelRegistry

from recsys.evaluating import evaluate_kind, fit, make_split
from recsys.interactions import IdMap, Interactions, interaction_matrix

DEFAULT_MODEL_NAME = "recommender"


_JOB: dict[str, Any] = {}
"""what the model processes share (set before they fork, so nothing is pickled to them)"""


def _tune_and_fit(kind: str) -> tuple[str, tuple[dict[str, Any], Path, float]]:
    """Tune ``kind`` on the split, test it, fit it on all the data and save it: (kind, (result, path, fit_s))."""
    from threadpoolctl import threadpool_limits

    job = _JOB
    with threadpool_limits(job["threads"], "blas"):
        result = evaluate_kind(kind, job["split"], refit=True, threads=job["threads"])
        started = time.perf_counter()
        model = fit(kind, result["params"], job["full"], job["users"], job["items"], seed=job["seed"],
                    threads=job["threads"])
        full_fit_s = time.perf_counter() - started
    path = job["out"] / kind
    model.save(path)
    return kind, (result, path, full_fit_s)


def train_and_register(
    data: Interactions,
    dataset_version: str,
    *,
    kinds: list[str],
    registry: ModelRegistry,
    name: str = DEFAULT_MODEL_NAME,
    seed: int = 0,
    threads: int = 0,
    promote: bool = True,
    on_model=None,
    workers: int = 1,
) -> dict[str, Any]:
    """Returns {"registered": [ModelVersion...], "results": [...], "promoted": ModelVersion | None}.

    With ``workers`` > 1 the models are tuned and fitted in that many processes at once (each model is
    independent); they are registered in ``kinds`` order either way, so versions do not depend on it."""
    split = make_split(data, seed)
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    full = interaction_matrix(data, users, items)
    registered, results = [], []
    with tempfile.TemporaryDirectory(prefix="recsys-train-") as scratch:
        _JOB.update(split=split, full=full, users=users, items=items, seed=seed, threads=threads, out=Path(scratch))
        try:
            if workers > 1 and len(kinds) > 1:
                import multiprocessing

                with multiprocessing.get_context("fork").Pool(min(workers, len(kinds))) as pool:
                    fitted = dict(pool.imap_unordered(_tune_and_fit, kinds))
            else:
                fitted = dict(_tune_and_fit(kind) for kind in kinds)
        finally:
            _JOB.clear()
        for kind in kinds:
            result, path, full_fit_s = fitted[kind]
            metrics = {f"valid_{k}@10": v for k, v in result["valid"].items() if k != "users"}
            metrics |= {f"test_{k}@10": v for k, v in result["test"].items() if k != "users"}
            # Numbers only (lichen models list shows them); the protocol is in docs/recsys.md.
            metrics |= {"fit_s": round(full_fit_s, 4), "split_seed": seed}
            version = registry.register(name, path, params={"model": kind, **result["params"]},
                                        metrics=metrics, dataset_version=dataset_version)
            registered.append(version)
            results.append(result)
            if on_model is not None:
                on_model(kind, result, version)
    promoted = None
    if promote and registered:
        best = max(registered, key=lambda v: v.metrics["valid_ndcg@10"])
        promoted = registry.promote(name, best.version)
    return {"registered": registered, "results": results, "promoted": promoted}
