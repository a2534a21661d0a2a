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
) -> dict[str, Any]:
    """Returns {"registered": [ModelVersion...], "results": [...], "promoted": ModelVersion | None}."""
    split = make_split(data, seed)
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    full = interaction_matrix(data, users, items)
    registered, results = [], []
    for kind in kinds:
        result = evaluate_kind(kind, split, refit=True, threads=threads)
        started = time.perf_counter()
        model = fit(kind, result["params"], full, users, items, seed=seed, threads=threads)
        full_fit_s = time.perf_counter() - started
        metrics = {f"valid_{k}@10": v for k, v in result["valid"].items() if k != "users"}
        metrics |= {f"test_{k}@10": v for k, v in result["test"].items() if k != "users"}
        # Numbers only (lichen models list shows them); the protocol is in docs/recsys.md.
        metrics |= {"fit_s": round(full_fit_s, 4), "split_seed": seed}
        with tempfile.TemporaryDirectory(prefix=f"recsys-{kind}-") as tmp:
            model.save(Path(tmp) / kind)
            version = registry.register(name, Path(tmp) / kind, params={"model": kind, **result["params"]},
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
