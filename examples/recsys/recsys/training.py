"""Training: tune and test each model on several seeds' splits, choose its
hyperparameters by validation averaged over the seeds, fit it on the whole
dataset for serving, register it in Lichen's model registry, and promote the
best by mean validation NDCG@10 (never by test: that would leak)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lichen import ModelRegistry

from recsys.evaluating import METRICS, evaluate_kind, fit, make_split
from recsys.evaluation_runs import COST_ORDER, SHARED, in_processes, run_protocol
from recsys.interactions import IdMap, Interactions, interaction_matrix

DEFAULT_MODEL_NAME = "recommender"


def choose_params(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid point with the best validation NDCG@10 averaged over the seeds' runs (each run tunes the
    same grid on its own split): steadier than any one seed's winner. Ties go to the earlier point."""
    grids = [run["grid"] for run in runs]
    points = [point["params"] for point in grids[0]]
    if any([point["params"] for point in grid] != points for grid in grids):
        raise ValueError(f"{kind}: the seeds' runs tuned different grids")
    means = [sum(grid[i]["valid_ndcg"] for grid in grids) / len(grids) for i in range(len(points))]
    return points[max(range(len(points)), key=lambda i: (means[i], -i))]


def summarise(kind: str, runs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """One model's result over the seeds, each figure the mean over them: the validation metrics of the
    chosen params, and the protocol's test metrics (each seed tested the point best on its own validation,
    refit on train+valid, as ``evaluate`` reports)."""
    position = [point["params"] for point in runs[0]["grid"]].index(params)
    valid = {metric: sum(run["grid"][position]["valid"][metric] for run in runs) / len(runs) for metric in METRICS}
    test = {metric: sum(run["test"][metric] for run in runs) / len(runs) for metric in METRICS}
    return {"model": kind, "params": params, "seeds": [run["seed"] for run in runs], "valid": valid, "test": test}


def metrics_at_params(kind: str, splits, runs: list[dict[str, Any]], params: dict[str, Any], *,
                      threads: int = 0, refit: bool = True, eval_users: int = 0) -> dict[str, float]:
    """Mean test metrics over the seeds of one configuration (the one ``choose_params`` promotes), each seed
    tested with it under the runs' protocol (``refit``, ``eval_users``): a run that chose it on its own
    validation already holds them, the others are run again with a one-point grid. The protocol's figure
    (``summarise``) lets each seed keep its own winner instead; both are chosen on validation only."""
    tests = []
    for split, run in zip(splits, runs, strict=True):
        if run["seed"] != split.seed:
            raise ValueError(f"{kind}: run of seed {run['seed']} given with the split of seed {split.seed}")
        if run["params"] == params:
            tests.append(run["test"])
        else:
            tests.append(evaluate_kind(kind, split, grid=[params], threads=threads, refit=refit,
                                       eval_users=eval_users)["test"])
    return {metric: sum(test[metric] for test in tests) / len(tests) for metric in METRICS}


def promoted_configs(data: Interactions, runs: dict[tuple[int, str], dict[str, Any]], seeds: list[int],
                     kinds: list[str], *, threads: int = 0, refit: bool = True, eval_users: int = 0
                     ) -> dict[str, dict[str, Any]]:
    """{kind: {"params", "test"}}: each model's promoted configuration (``choose_params`` over the seeds'
    ``runs``, keyed by (seed, kind)) tested on every seed with :func:`metrics_at_params`."""
    splits = [make_split(data, seed) for seed in seeds]
    out = {}
    for kind in kinds:
        seed_runs = [runs[seed, kind] for seed in seeds]
        params = choose_params(kind, seed_runs)
        out[kind] = {"params": params, "test": metrics_at_params(kind, splits, seed_runs, params, threads=threads,
                                                                 refit=refit, eval_users=eval_users)}
    return out


def _fit_full(kind: str) -> tuple[str, tuple[Path, float, int, float]]:
    """Fit ``kind`` with its chosen params on all the data, keep serving's candidates and save it:
    (kind, (path, fit_s, candidate users, candidates_s))."""
    from threadpoolctl import threadpool_limits

    job = SHARED
    with threadpool_limits(job["threads"], "blas"):
        started = time.perf_counter()
        model = fit(kind, job["params"][kind], job["full"], job["users"], job["items"], seed=job["seed"],
                    threads=job["threads"])
        full_fit_s = time.perf_counter() - started
        started = time.perf_counter()
        candidate_users = model.precompute_candidates(job["candidates_above"])  # 0 unless linear in the history
        candidates_s = time.perf_counter() - started
    path = job["out"] / kind
    model.save(path)
    return kind, (path, full_fit_s, candidate_users, candidates_s)


def train_and_register(
    data: Interactions,
    dataset_version: str,
    *,
    kinds: list[str],
    registry: ModelRegistry,
    name: str = DEFAULT_MODEL_NAME,
    seeds: tuple[int, ...] = (0, 1, 2),
    threads: int = 0,
    promote: bool = True,
    on_model=None,
    on_run=None,
    workers: int = 1,
    cache_dir: Path | None = None,
    candidates_above: int | None = None,
    eval_users: int = 0,
) -> dict[str, Any]:
    """Returns {"registered": [ModelVersion...], "results": [...], "promoted": ModelVersion | None}.

    Every model is tuned and tested on each seed's split (``recsys.evaluation_runs``: runs already done
    for this dataset come from ``cache_dir``, and ``evaluate`` later reuses these). A model's params are
    the grid point best on validation averaged over the seeds; it is then fitted on all the data,
    registered with the seeds' mean metrics, and the model with the best mean validation NDCG@10 is
    promoted (never by test: that would leak). With ``workers`` > 1 the runs and the final fits use that
    many processes; models are registered in ``kinds`` order either way."""
    if not seeds:
        raise ValueError("train needs at least one split seed")
    work = [(seed, kind) for seed in seeds for kind in kinds]
    runs = run_protocol(data, dataset_version, work, refit=True, threads=threads, workers=workers,
                        cache_dir=cache_dir, on_done=on_run, eval_users=eval_users)
    chosen = {kind: choose_params(kind, [runs[seed, kind] for seed in seeds]) for kind in kinds}
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    full = interaction_matrix(data, users, items)
    registered, results = [], []
    with tempfile.TemporaryDirectory(prefix="recsys-train-") as scratch:
        shared = {"full": full, "users": users, "items": items, "seed": seeds[0], "threads": threads,
                  "out": Path(scratch), "params": chosen, "candidates_above": candidates_above}
        order = sorted(kinds, key=lambda kind: COST_ORDER.get(kind, 9))
        fitted = dict(in_processes(_fit_full, order, min(workers, len(kinds)), shared))
        for kind in kinds:
            path, full_fit_s, candidate_users, candidates_s = fitted[kind]
            result = summarise(kind, [runs[seed, kind] for seed in seeds], chosen[kind])
            metrics = {f"valid_{k}@10": v for k, v in result["valid"].items()}
            metrics |= {f"test_{k}@10": v for k, v in result["test"].items()}
            # Numbers only (lichen models list shows them); the protocol is in docs/recsys.md.
            metrics |= {"fit_s": round(full_fit_s, 4), "split_seeds": len(seeds)}
            if eval_users:
                metrics["eval_users"] = eval_users
            if candidate_users:  # serving's precomputed candidates (recsys.models.candidates)
                metrics |= {"candidate_users": candidate_users, "candidates_s": round(candidates_s, 4)}
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
