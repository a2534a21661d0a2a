"""Running the protocol of :mod:`recsys.evaluating` for many (seed, model)
pairs: in parallel processes, heaviest first, and remembered on disk.

``train`` runs the seeds to choose its hyperparameters and its model;
``evaluate`` then finds the same (dataset, seed, model, protocol) runs already
done and only runs what is missing. A run is keyed by the dataset version,
the seed, the model, refit or not, the model's grid and a digest of the code
that computes it (this package's evaluation and model sources), so editing a
model or its grid never reuses a stale result. Each run is one JSON file,
written atomically; a file that does not parse is ignored and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from recsys.interactions import Interactions

DEFAULT_CACHE = Path(".lichen") / "evaluations" / "runs"

# The heaviest first, so that the last process to finish is not the one still fitting EASE.
COST_ORDER = {"ease": 0, "kernel": 1, "itemknn": 2, "als": 3, "pop": 4}

_CODE = ("evaluating.py", "splits.py", "interactions.py", "models")


@cache
def code_digest() -> str:
    """sha256 over the sources that decide a run's numbers."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _CODE:
        path = root / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(root).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def run_key(dataset_version: str, seed: int, kind: str, refit: bool, eval_users: int = 0) -> str:
    from recsys.evaluating import GRIDS

    grid = json.dumps(GRIDS.get(kind, []), sort_keys=True)
    protocol = [dataset_version, seed, kind, refit, grid, code_digest()]
    if eval_users:  # a sampled evaluation is another protocol (all users keep their old keys)
        protocol.append(eval_users)
    text = json.dumps(protocol)
    return f"{kind}-s{seed}-{'refit' if refit else 'train'}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def load_run(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    path = cache_dir / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_run(cache_dir: Path | None, key: str, result: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    import os
    import tempfile

    # Written whole or not at all (a temporary beside it, then renamed), but not through
    # lichen.atomic_output: a cache entry is not one of the job's artifacts in `lichen runs`.
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(result, default=str) + "\n")
        os.replace(temporary, cache_dir / f"{key}.json")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


SHARED: dict[str, Any] = {}
"""what the processes share: the dataset and the BLAS threads (set before they fork, so nothing is pickled)"""


def init_worker() -> None:
    """A pool process leaves Ctrl-C to its parent and dies quietly when the pool terminates it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_one(job: tuple[int, str, bool]) -> tuple[tuple[int, str], dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    from recsys.evaluating import evaluate_kind, make_split

    seed, kind, refit = job
    threads = SHARED["threads"]
    splits = SHARED.setdefault("splits", {})
    with threadpool_limits(threads, "blas"):
        if seed not in splits:
            splits[seed] = make_split(SHARED["data"], seed)
        return (seed, kind), evaluate_kind(kind, splits[seed], refit=refit, threads=threads,
                                           eval_users=SHARED.get("eval_users", 0))


def in_processes(function: Callable, jobs: Iterable, workers: int, shared: dict[str, Any]) -> Iterable:
    """``function`` over ``jobs`` in ``workers`` forked processes (in this one if 1), results as they finish.

    ``shared`` is put where the processes find it (:data:`SHARED`) before they fork."""
    import multiprocessing

    SHARED.clear()
    SHARED.update(shared)
    try:
        pool = (multiprocessing.get_context("fork").Pool(workers, initializer=init_worker)
                if workers > 1 else contextlib.nullcontext())
        with pool:
            yield from (pool.imap_unordered(function, jobs) if workers > 1 else map(function, jobs))
    finally:
        SHARED.clear()


def run_protocol(
    data: Interactions,
    dataset_version: str,
    work: list[tuple[int, str]],
    *,
    refit: bool = True,
    threads: int = 1,
    workers: int = 1,
    cache_dir: Path | None = DEFAULT_CACHE,
    reuse: bool = True,
    on_done: Callable[[int, str, dict[str, Any], bool], None] | None = None,
    eval_users: int = 0,
) -> dict[tuple[int, str], dict[str, Any]]:
    """{(seed, model): result of ``evaluate_kind``} for every pair in ``work``.

    Pairs already run (same dataset, seed, model, protocol, grid and code) come from ``cache_dir``
    (unless ``reuse`` is false); the rest run in ``workers`` processes, heaviest model first, and are saved there.
    ``eval_users``: validation and test rank that many sampled users (0: all; ``evaluating.evaluation_rows``).
    ``on_done(seed, kind, result, reused)`` is called as each one is known."""
    done: dict[tuple[int, str], dict[str, Any]] = {}
    keys = {(seed, kind): run_key(dataset_version, seed, kind, refit, eval_users) for seed, kind in work}
    for (seed, kind), key in keys.items():
        result = load_run(cache_dir, key) if reuse else None
        if result is not None:
            done[seed, kind] = result
            if on_done is not None:
                on_done(seed, kind, result, True)
    missing = sorted((pair for pair in work if pair not in done), key=lambda p: (COST_ORDER.get(p[1], 9), p[0]))
    jobs = [(seed, kind, refit) for seed, kind in missing]
    for (seed, kind), result in in_processes(_run_one, jobs, min(workers, max(1, len(jobs))),
                                             {"data": data, "threads": threads, "eval_users": eval_users}):
        save_run(cache_dir, keys[seed, kind], result)
        done[seed, kind] = result
        if on_done is not None:
            on_done(seed, kind, result, False)
    return done
