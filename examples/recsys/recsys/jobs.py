"""Job entrypoints for ``lichen run``: ``ingest``, ``features``, ``train`` and
``evaluate``. Each is a plain function taking its argv (``--data PATH`` and
friends are passed through from the command line), run with the app
directory as the working directory. They can also be called directly::

    python -c "from recsys.jobs import ingest; ingest(['--data', '../../../shared/data/ml-100k'])"

User errors raise :class:`lichen.DataError` naming file and line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from lichen import DataError
from rich.console import Console
from rich.table import Table as RichTable

from recsys import catalogs, datasets, evaluation_runs, ingesting
from recsys.downloading import DownloadUnavailable, fetch_ml100k, sha256_file
from recsys.synthesizing import synthesize

DEFAULT_EVENTS = Path(".lichen") / "events"
DEFAULT_DOWNLOADS = Path(".lichen") / "downloads"
RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv")
MAX_REPORTED = 100


def _console() -> Console:
    # Job logs are usually piped (lichen run streams them): do not squeeze tables into 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _rating_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN,MAX such as 0.5,5") from None
    return low, high


class _Parser(argparse.ArgumentParser):
    """argparse that raises (so ``lichen run`` and tests see a clean error) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from lichen import ConfigError

        raise ConfigError(f"{self.prog}: {message}")


def _resolve_source(path: Path) -> Path:
    if path.is_dir():
        for name in RATINGS_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"no ratings file in this directory (looked for {', '.join(RATINGS_FILES)})",
                        where=str(path))
    if not path.exists():
        raise DataError("no such file or directory", where=str(path))
    return path


# ---------------------------------------------------------------- ingest


def ingest_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ingest", description="Validate ratings and write a versioned interaction dataset.",
                epilog="Example: lichen run ingest --app examples/recsys -- --data ratings.csv --on-bad-rows skip")
    p.add_argument("--data", type=Path, help="ratings file or directory (u.data, ratings.dat, ratings.csv, any CSV)")
    p.add_argument("--format", default="auto", choices=ingesting.FORMATS)
    p.add_argument("--columns", help="generic CSV mapping: user=COL,item=COL[,rating=COL][,timestamp=COL]")
    p.add_argument("--delimiter", help="field delimiter (default: by format)")
    p.add_argument("--rating-range", type=_rating_range, default=(0.5, 5.0), metavar="MIN,MAX")
    p.add_argument("--on-bad-rows", choices=("fail", "skip"), default="fail")
    p.add_argument("--on-duplicates", choices=("remove", "fail"), default="remove")
    p.add_argument("--events", type=Path, default=DEFAULT_EVENTS, help="events log directory (*.jsonl)")
    p.add_argument("--no-events", action="store_true", help="ignore the events log")
    p.add_argument("--synthetic", action="store_true", help="generate synthetic data instead of reading")
    p.add_argument("--offline", action="store_true", help="never try to download MovieLens 100K")
    p.add_argument("--users", type=int, default=943, help="synthetic users")
    p.add_argument("--items", type=int, default=1682, help="synthetic items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS)
    p.add_argument("--out", type=Path, default=datasets.DEFAULT_STORE, help="dataset store directory")
    return p


def ingest(argv: list[str] | None = None) -> int:
    """Read, validate and deduplicate ratings; write a versioned dataset."""
    _exit_on_sigterm()
    args = ingest_parser().parse_args(argv if argv is not None else sys.argv[1:])
    with _out_of_memory("ingest"):
        return _ingest(args)


def _ingest(args: argparse.Namespace) -> int:
    console = _console()
    table = ingesting.Table()
    report: dict = {}
    metadata: dict[int, dict] = {}
    data_path = args.data
    if data_path is None and not args.synthetic and not args.offline:
        try:
            data_path = fetch_ml100k(args.downloads)
            console.print(f"Downloaded MovieLens 100K from GroupLens; u.data sha256 verified ({data_path}).")
            report["source"] = {"kind": "download", "path": str(data_path)}
        except DownloadUnavailable as err:
            console.print(f"[yellow]No --data given and no network ({err}).[/]")
    if data_path is not None:
        source = _resolve_source(Path(data_path))
        ingesting.read_ratings(source, fmt=args.format, columns=ingesting.parse_columns(args.columns),
                               delimiter=args.delimiter, rating_range=args.rating_range, table=table)
        report.setdefault("source", {"kind": "file", "path": str(source.absolute())})
        report["source"]["sha256"] = sha256_file(source)
        meta_path = catalogs.find_metadata(source)
        if meta_path is not None:
            metadata, meta_bad = catalogs.read_metadata(meta_path)
            report["item_metadata"] = {"path": str(meta_path), "items": len(metadata),
                                       "bad_lines": [str(b) for b in meta_bad[:MAX_REPORTED]]}
    else:
        synthetic = synthesize(args.users, args.items, seed=args.seed)
        console.print(
            f"[bold yellow]Generated a SYNTHETIC dataset[/] ({args.users} users, {args.items} items, "
            f"Zipf popularity + rank-12 taste factors, seed {args.seed}). It is not MovieLens: "
            "pass --data PATH for real data."
        )
        report["source"] = {"kind": "synthetic", "users": args.users, "items": args.items, "seed": args.seed}
        table.extend("synthetic", np.arange(1, len(synthetic) + 1), synthetic.users, synthetic.items,
                     synthetic.ratings, synthetic.timestamps)
    events_read = 0
    if not args.no_events and args.events.is_dir():
        before = len(table)
        ingesting.read_events(args.events, rating_range=args.rating_range, table=table)
        events_read = len(table) - before
        report["events"] = {"directory": str(args.events), "rows": events_read}
    ingesting.check_bad_rows(table, args.on_bad_rows)
    data, duplicates = ingesting.deduplicate(table, args.on_duplicates)
    if len(data) == 0:
        raise DataError("no valid ratings left after validation", where=str(data_path or "synthetic"))
    report.update({
        "formats": table.formats,
        "rows_read": len(table) + len(table.bad_rows),
        "bad_rows": len(table.bad_rows),
        "bad_row_lines": [str(b) for b in table.bad_rows[:MAX_REPORTED]],
        "duplicates_removed": len(duplicates),
        "duplicate_lines": [str(d) for d in duplicates[:MAX_REPORTED]],
        "on_bad_rows": args.on_bad_rows,
        "rating_range": list(args.rating_range),
    })
    manifest = datasets.write_dataset(args.out, data, items=metadata, report=report)
    _print_ingest(console, manifest, table, duplicates, events_read, args.out)
    return 0


def _print_ingest(console, manifest, table, duplicates, events_read, store) -> None:
    summary = RichTable(title=f"dataset {manifest['version']}", show_header=False)
    summary.add_row("interactions", f"{manifest['rows']:,}")
    summary.add_row("users / items", f"{manifest['users']:,} / {manifest['items']:,}")
    summary.add_row("rows read", f"{manifest.get('rows_read', manifest['rows']):,}")
    summary.add_row("events log rows", f"{events_read:,}")
    summary.add_row("bad rows skipped", f"{len(table.bad_rows):,}")
    summary.add_row("duplicates removed", f"{len(duplicates):,}")
    summary.add_row("sha256", manifest["sha256"]["interactions.npz"])
    summary.add_row("stored at", str(Path(store) / manifest["version"]))
    console.print(summary)
    for bad in table.bad_rows[:10]:
        console.print(f"  [red]bad row[/] {bad}")
    if len(table.bad_rows) > 10:
        console.print(f"  ... and {len(table.bad_rows) - 10} more (all listed in manifest.json up to {MAX_REPORTED})")
    for dup in duplicates[:10]:
        console.print(f"  [yellow]duplicate[/] {dup}")
    if len(duplicates) > 10:
        console.print(f"  ... and {len(duplicates) - 10} more duplicates")


@contextlib.contextmanager
def _out_of_memory(job: str):
    """A job that runs out of memory ends with one clear line, not a MemoryError traceback: how much
    it could not get, what limits it, and the fix."""
    try:
        yield
    except MemoryError as err:
        from recsys import memory_budgets

        available = memory_budgets.available_memory()
        raise DataError(f"ran out of memory: {str(err).rstrip('.') or 'an allocation failed'}; "
                        f"{memory_budgets.format_bytes(available.bytes)} still available "
                        f"({available.limited_by}): {memory_budgets.more_memory(available)}", where=job) from None


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``atomic_output`` removes its temporaries
    (``lichen run`` does the same; this covers running a job by hand)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _raise(signum, frame):
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _raise)


# -------------------------------------------------------------- features


def features_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="features", description="Build user histories, popularity, co-occurrence and item metadata.",
                epilog="Example: lichen run features --app examples/recsys -- --redis-url redis://127.0.0.1:6379/0")
    p.add_argument("--store", type=Path, default=datasets.DEFAULT_STORE, help="dataset store directory")
    p.add_argument("--dataset", help="dataset version (default: LATEST)")
    p.add_argument("--out", type=Path, default=None, help="SQLite feature store path (default .lichen/features.db)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="write to Redis instead (env REDIS_URL)")
    p.add_argument("--top-n", type=int, default=20, help="co-occurring items kept per item")
    return p


def features(argv: list[str] | None = None) -> int:
    """Compute serving features from a dataset version into SQLite or Redis."""
    from recsys import features as feature_store

    _exit_on_sigterm()
    args = features_parser().parse_args(argv if argv is not None else sys.argv[1:])
    console = _console()
    data, manifest = datasets.load_dataset(args.store, args.dataset)
    metadata = datasets.load_items(args.store, manifest["version"])
    with _out_of_memory("features"):
        built = feature_store.build_features(data, metadata, manifest["version"], top_n=args.top_n)
    if args.redis_url and args.out is None:
        keys = feature_store.write_redis(args.redis_url, built)
        where = f"Redis {args.redis_url} ({keys:,} keys under {feature_store.REDIS_PREFIX}:{manifest['version']}:)"
    else:
        path = feature_store.write_sqlite(args.out or feature_store.DEFAULT_SQLITE, built)
        where = f"SQLite {path}"
    console.print(f"features for dataset {manifest['version']}: {len(built.histories):,} user histories, "
                  f"{len(built.popularity):,} items, {len(built.cooccurrence):,} co-occurrence lists, "
                  f"{len(built.metadata):,} with metadata → {where}")
    return 0


# ----------------------------------------------------------------- train


def _kinds(text: str) -> list[str]:
    from recsys.models import MODEL_KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in MODEL_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(MODEL_KINDS)}")
    return kinds


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers such as 0,1,2, got {text!r}")
    return seeds


def _eval_users(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of users (0: all), got {text!r}")
    return int(text)


def _protocol(seeds: list[int] | None, eval_users: int | None, manifest: dict, console: Console
              ) -> tuple[list[int], int]:
    """The split seeds and the number of users validation and test rank (0: all): as given, else the
    defaults for the dataset's size (recsys.evaluating: one seed and a sample of users on large data)."""
    from recsys.evaluating import LARGE_INTERACTIONS, LARGE_USERS, default_eval_users, default_seeds

    n_users, rows = int(manifest.get("users", 0)), int(manifest.get("rows", 0))
    notes = []
    if seeds is None:
        seeds = default_seeds(rows)
        if len(seeds) == 1:
            notes.append(f"one split seed (more than {LARGE_INTERACTIONS:,} interactions; --seeds to choose)")
    if eval_users is None:
        eval_users = default_eval_users(n_users)
        if eval_users:
            notes.append(f"validation and test rank {eval_users:,} sampled users of {n_users:,} (more than "
                         f"{LARGE_USERS:,}; --eval-users N, 0 for all)")
    if eval_users >= n_users:
        eval_users = 0
    if notes:
        console.print(f"large dataset: {'; '.join(notes)}")
    return seeds, eval_users


DEFAULT_MODELS = ["kernel", "ease", "als", "itemknn", "pop"]
MODELS_HELP = ("comma-separated (default: those of kernel,ease,als,itemknn,pop whose fit fits in memory; kernel only "
               "up to ML-1M's size: docs/recsys.md#the-kernel-model)")


def _catalogue(manifest: dict):
    from recsys.memory_budgets import Catalogue

    return Catalogue(int(manifest["items"]), int(manifest.get("users", 0)), int(manifest.get("rows", 0)))


def _default_models(chosen: list[str] | None, manifest: dict, console: Console) -> list[str]:
    """The models asked for (each fit checks its own memory and refuses with the reason), else every
    default model whose fit on this catalog fits in the memory available (recsys.memory_budgets),
    saying which were skipped and why."""
    from recsys import memory_budgets as budgets

    if chosen:
        return chosen
    from recsys.models.kernel_ridge import default_refusal

    catalogue = _catalogue(manifest)
    candidates = list(DEFAULT_MODELS)
    too_slow = default_refusal(catalogue.n_users, catalogue.n_items)  # its cost grows as the cube of the data
    if too_slow:
        candidates.remove("kernel")
        console.print(f"[yellow]skipping kernel: {too_slow}; --models kernel,... to train it anyway[/]")
    available = budgets.available_memory()
    kept, skipped = budgets.plan_models(candidates, catalogue, available.bytes)
    for kind, need in skipped.items():
        console.print(f"[yellow]skipping {kind}: {budgets.NAMES[kind]} on {catalogue.n_items:,} items needs "
                      f"{budgets.format_bytes(need)}, {budgets.format_bytes(available.bytes)} available "
                      f"({available.limited_by}; a fit may use {1 - budgets.SAFETY_MARGIN:.0%} of it)[/]")
    if not kept:
        raise DataError(f"no model fits in {budgets.format_bytes(available.bytes)} ({available.limited_by}) on "
                        f"{catalogue.n_items:,} items", where="--models")
    if skipped or len(candidates) < len(DEFAULT_MODELS):
        console.print(f"[yellow]training {', '.join(kept)}[/]")
    return kept


def _needs(kinds: list[str], manifest: dict) -> list[int]:
    from recsys.memory_budgets import KINDS, need_bytes

    return [need_bytes(kind, _catalogue(manifest)) for kind in kinds if kind in KINDS]


def _memory_workers(needs: list[int], wanted: int, console: Console) -> int:
    """``wanted`` parallel fits, fewer if the largest of them would not fit in memory together."""
    from recsys import memory_budgets as budgets

    available = budgets.available_memory()
    workers = min(wanted, budgets.parallel_fits(needs, available.bytes, wanted))
    if workers < wanted:
        console.print(f"[yellow]{workers} parallel process{'es' if workers > 1 else ''} instead of {wanted}: "
                      f"the largest fits need {budgets.format_bytes(sum(sorted(needs)[-wanted:]))} together, "
                      f"{budgets.format_bytes(available.bytes)} available ({available.limited_by})[/]")
    return workers


def _threads(value: int | None) -> int:
    """BLAS/implicit threads. Default 1: on this shared 2-core box EASE's fit
    measured 4.5x slower with 2 BLAS threads than with 1 under load
    (bench/recsys_training.py); pass --threads 2 on an idle machine."""
    return value if value else 1


def train_parser() -> argparse.ArgumentParser:
    from recsys.models.candidates import SCORING_BUDGET  # scipy: not imported by the lighter jobs

    p = _Parser(prog="train", description="Tune, train, register and promote recommenders.",
                epilog="Example: lichen run train --app examples/recsys -- --models ease,als --seeds 0,1,2")
    p.add_argument("--store", type=Path, default=datasets.DEFAULT_STORE, help="dataset store directory")
    p.add_argument("--dataset", help="dataset version (default: LATEST)")
    p.add_argument("--models", type=_kinds, default=None,
                   help=MODELS_HELP)
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="split seeds: each model is tuned on each, its params chosen by mean validation NDCG@10, "
                        "and the model with the best mean is promoted (default 0,1,2; 0 above 5M interactions)")
    p.add_argument("--seed", type=int, default=None, help="a single split seed (the same as --seeds N)")
    p.add_argument("--eval-users", type=_eval_users, default=None, metavar="N",
                   help="validation and test rank N users sampled with the split's seed (default: all; 2000 above "
                        "20000 users; 0: all)")
    p.add_argument("--runs", type=Path, default=evaluation_runs.DEFAULT_CACHE,
                   help="where (seed, model) runs are kept for evaluate to reuse")
    p.add_argument("--name", default="recommender", help="model name in the registry")
    p.add_argument("--out", type=Path, default=None, help="model registry root (default .lichen/models)")
    p.add_argument("--threads", type=int, default=None, help="BLAS/implicit threads (default 1)")
    p.add_argument("--workers", type=int, default=_env_workers(),
                   help="models tuned and fitted in parallel processes (default: env RECSYS_WORKERS, else one per "
                        "core the job may use)")
    p.add_argument("--no-promote", action="store_true", help="register without promoting")
    p.add_argument("--candidates-above", type=int, default=None, metavar="N",
                   help="keep the certified top items of each user with more than N training items in the EASE and "
                        f"ItemKNN artifacts, so serving them skips scoring their history (default: {SCORING_BUDGET:,} "
                        "divided by the number of items, a history whose scoring reads more weights than that; -1: "
                        "none)")
    return p


def train(argv: list[str] | None = None) -> int:
    """Tune on validation, register every model, promote the best."""
    from lichen import ModelRegistry
    from threadpoolctl import threadpool_limits

    from recsys.training import train_and_register

    _exit_on_sigterm()
    args = train_parser().parse_args(argv if argv is not None else sys.argv[1:])
    console = _console()
    data, manifest = datasets.load_dataset(args.store, args.dataset)
    args.models = _default_models(args.models, manifest, console)
    registry = ModelRegistry(args.out) if args.out else ModelRegistry()
    threads = _threads(args.threads)
    seeds, eval_users = _protocol([args.seed] if args.seed is not None else args.seeds, args.eval_users,
                                  manifest, console)
    workers = min(max(1, args.workers or _cores()), len(seeds) * len(args.models))
    if workers > 1:
        workers = _memory_workers(_needs([kind for _seed in seeds for kind in args.models], manifest), workers,
                                  console)
    if manifest.get("source", {}).get("kind") == "synthetic":
        console.print("[yellow]Training on the SYNTHETIC dataset[/] (ingest --data PATH for real data).")

    def report(kind, result, version):
        t = result["test"]
        console.print(f"  {kind:8s} v{version.version}  params {result['params']}  "
                      f"valid NDCG@10 {result['valid']['ndcg']:.4f}  test NDCG@10 {t['ndcg']:.4f} "
                      f"Recall@10 {t['recall']:.4f}  fit {version.metrics['fit_s']:.2f}s"
                      + (f"  candidates {version.metrics['candidates_s']:.2f}s" if "candidates_s" in version.metrics
                         else ""))

    console.print(f"training {', '.join(args.models)} on dataset {manifest['version']} "
                  f"({manifest['rows']:,} interactions, split seeds {','.join(map(str, seeds))}, "
                  f"{workers} process{'es' if workers > 1 else ''} of {threads} thread{'s' if threads > 1 else ''}; "
                  + ("metrics are means over the seeds)" if len(seeds) > 1 else "metrics from that seed)"))
    from rich.progress import Progress

    with threadpool_limits(threads, "blas"), Progress(console=console, transient=True) as progress:
        task = progress.add_task("tuning", total=len(seeds) * len(args.models))

        def ran(seed, kind, result, reused):
            progress.update(task, description=f"{kind} seed {seed} {'reused' if reused else 'done'}")
            progress.advance(task)

        out = train_and_register(data, manifest["version"], kinds=args.models, registry=registry, name=args.name,
                                 seeds=tuple(seeds), threads=threads, promote=not args.no_promote, on_model=report,
                                 on_run=ran, workers=workers, cache_dir=args.runs,
                                 candidates_above=args.candidates_above, eval_users=eval_users)
    if out["promoted"] is not None:
        p = out["promoted"]
        console.print(f"promoted {args.name} v{p.version} ({p.params['model']}, best validation NDCG@10 "
                      f"{p.metrics['valid_ndcg@10']:.4f}, mean over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}) "
                      f"from {registry.root}")
    return 0


# -------------------------------------------------------------- evaluate


def evaluate_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evaluate", description="RecBole protocol over several seeds, beside RecBole's figures.",
                epilog="Example: lichen run evaluate --app examples/recsys -- --models ease --seeds 0,1,2 --no-refit")
    p.add_argument("--store", type=Path, default=datasets.DEFAULT_STORE, help="dataset store directory")
    p.add_argument("--dataset", help="dataset version (default: LATEST)")
    p.add_argument("--models", type=_kinds, default=None,
                   help=MODELS_HELP)
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="comma-separated split seeds (default 0,1,2; 0 above 5M interactions)")
    p.add_argument("--eval-users", type=_eval_users, default=None, metavar="N",
                   help="rank N users sampled with the split's seed (default: all; 2000 above 20000 users; 0: all)")
    p.add_argument("--no-refit", action="store_true",
                   help="test the train-only model (RecBole exactly) instead of refitting on train+valid")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=_env_workers(),
                   help="processes evaluating in parallel (default: env RECSYS_WORKERS, else one per core the job "
                        "may use)")
    p.add_argument("--out", type=Path, default=Path(".lichen") / "evaluations", help="results directory (JSON)")
    p.add_argument("--runs", type=Path, default=evaluation_runs.DEFAULT_CACHE,
                   help="(seed, model) runs already done (by train) are reused from here")
    p.add_argument("--no-reuse", action="store_true", help="run every (seed, model) again, ignoring --runs")
    p.add_argument("--promoted-config", action="store_true",
                   help="also test, on every seed, the one configuration per model that train promotes (best "
                        "validation averaged over the seeds); refits the seeds whose own winner differs")
    return p


def _env_workers() -> int | None:
    text = os.environ.get("RECSYS_WORKERS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"expected a whole number of processes >= 1, got {text!r}", where="env RECSYS_WORKERS")
    return int(text)


def _cores() -> int:
    """The cores this process may run on (the job's `resources.cpu` under `lichen run`)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def evaluate(argv: list[str] | None = None) -> int:
    """Evaluate every model under RecBole's protocol, mean over seeds."""
    import json

    from lichen import atomic_output
    from threadpoolctl import threadpool_limits

    from recsys.evaluating import mean_over_seeds

    _exit_on_sigterm()
    args = evaluate_parser().parse_args(argv if argv is not None else sys.argv[1:])
    console = _console()
    data, manifest = datasets.load_dataset(args.store, args.dataset)
    seeds, eval_users = _protocol(args.seeds, args.eval_users, manifest, console)
    args.models = _default_models(args.models, manifest, console)
    threads = _threads(args.threads)
    from rich.progress import Progress

    work = [(seed, kind) for seed in seeds for kind in args.models]
    workers = min(len(work), _cores(), max(1, args.workers or len(work)))
    if workers > 1:
        workers = _memory_workers(_needs([kind for _seed, kind in work], manifest), workers, console)
    reused = []
    with threadpool_limits(threads, "blas"), Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"evaluating ({workers} process{'es' if workers > 1 else ''})", total=len(work))

        def ran(seed, kind, result, was_reused):
            if was_reused:
                reused.append((seed, kind))
            progress.update(task, description=f"{kind} seed {seed} {'reused' if was_reused else 'done'}")
            progress.advance(task)

        # every (seed, model) is independent: one process per core takes them in turn, heaviest first; those
        # train (or an earlier evaluate) already ran on this dataset with the same code are reused
        done = evaluation_runs.run_protocol(data, manifest["version"], work, refit=not args.no_refit,
                                            threads=threads, workers=workers, cache_dir=args.runs,
                                            reuse=not args.no_reuse, on_done=ran, eval_users=eval_users)
        results = [done[item] for item in work]
    if reused:
        console.print(f"reused {len(reused)} of {len(work)} runs already done on this dataset ({args.runs})")
    summary = mean_over_seeds(results)
    console.print(results_table(summary, manifest, seeds, refit=not args.no_refit, eval_users=eval_users))
    payload = {"dataset_version": manifest["version"], "source": manifest.get("source"), "seeds": seeds,
               "eval_users": eval_users or int(manifest.get("users", 0)), "refit": not args.no_refit,
               "summary": summary, "runs": results}
    if args.promoted_config:
        from recsys.training import promoted_configs

        with threadpool_limits(threads, "blas"):
            payload["promoted_config"] = promoted_configs(data, done, seeds, args.models, threads=threads,
                                                          refit=not args.no_refit, eval_users=eval_users)
        console.print(promoted_config_table(payload["promoted_config"], seeds))
    out = args.out / f"{manifest['version']}.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"results written to {out}")
    return 0


def promoted_config_table(configs: dict[str, dict], seeds: list[int]) -> RichTable:
    import json

    table = RichTable(title=f"Test metrics @10 of the configuration train promotes, tested on every seed "
                            f"({','.join(map(str, seeds))})")
    for column in ("model", "params", "Recall@10", "NDCG@10", "MRR@10", "Hit@10"):
        table.add_column(column, justify="left" if column in ("model", "params") else "right")
    for kind, row in sorted(configs.items(), key=lambda kv: -kv[1]["test"]["ndcg"]):
        table.add_row(kind, json.dumps(row["params"]),
                      *(f"{row['test'][m]:.4f}" for m in ("recall", "ndcg", "mrr", "hit")))
    return table


def results_table(summary: dict, manifest: dict, seeds: list[int], *, refit: bool, eval_users: int = 0
                  ) -> RichTable:
    from recsys.evaluating import RECBOLE_ML100K

    source = manifest.get("source", {})
    title = (f"Test metrics @10, mean over seeds {','.join(map(str, seeds))} — dataset {manifest['version']} "
             f"({'SYNTHETIC' if source.get('kind') == 'synthetic' else source.get('path', source.get('kind', '?'))}); "
             f"{'refit on train+valid' if refit else 'train-only model (RecBole exactly)'}"
             + (f"; {eval_users:,} sampled users" if eval_users else ""))
    table = RichTable(title=title)
    for column in ("model", "Recall@10", "NDCG@10", "MRR@10", "Hit@10", "fit s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, row in sorted(summary.items(), key=lambda kv: -kv[1]["ndcg"]):
        table.add_row(model, *(f"{row[m]:.4f} ± {row[m + '_std']:.4f}" for m in ("recall", "ndcg", "mrr", "hit")),
                      f"{row['fit_s']:.2f}")
    for name, ref in RECBOLE_ML100K.items():
        table.add_row(f"[dim]{name}, ML-100K[/]", *(f"[dim]{ref[m]:.4f}[/]" for m in ("recall", "ndcg", "mrr", "hit")),
                      "")
    return table
