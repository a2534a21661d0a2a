"""The recommender pipeline end to end (`lichen run`: ingest → features → train → evaluate), per job,
before and after: the reference app as it was at ``--baseline`` (a git revision) and as it is now, on the
same data, one after the other in one run, each on a fresh copy of the app.

    .venv/bin/python bench/recsys_pipeline.py                       # ML-100K and an ml-latest-small-sized set
    .venv/bin/python bench/recsys_pipeline.py --sizes small --json
    .venv/bin/python bench/recsys_pipeline.py --baseline none       # after only
    .venv/bin/python bench/recsys_pipeline.py --sizes ml20m --jobs ingest,features --baseline none
    .venv/bin/python bench/recsys_pipeline.py --sizes ml20m --baseline none --memory train=12Gi,evaluate=12Gi

Sizes:
- ``ml100k``: MovieLens 100K, read in place from ../shared/data/ml-100k (943 users, 1,682 items, 100,000 ratings);
- ``small``: a synthetic ratings.csv the size of MovieLens ``ml-latest-small`` (610 users, 9,742 items,
  100,836 ratings; header, half stars), from ``recsys.synthesizing.synthesize_at_scale``;
- ``ml20m``: the same for ML-20M's shape (138,493 users, 27,278 items, 20,000,263 ratings).

``--jobs`` runs only some jobs (in order; each after the ones before it). ``--memory`` raises jobs' memory
limits in the copied app (train's 4Gi holds one 27k-item EASE fit at a time, so at ML-20M's shape the models
would be fitted one after another).

Per job it reports the wall time of each side and their ratio, and the after side's peak memory: the
proportional set size (PSS) of `lichen run` and every process under it, sampled every 0.2 s, so pages
the forked model processes share are counted once. Per model it gives the after side's test NDCG@10 and
Recall@10 (mean over the split seeds train used), the model train promoted (by mean validation) and the model best on test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "recsys"
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
LICHEN = str(Path(sys.executable).parent / "lichen")
JOBS = ("ingest", "features", "train", "evaluate")
SMALL = (610, 9_742, 100_836)  # ml-latest-small: users, items, ratings
ML20M = (138_493, 27_278, 20_000_263)
sys.path.insert(0, str(APP))


def app_at(revision: str, into: Path) -> Path:
    """examples/recsys as it was at ``revision`` (or as it is now for 'now'), without .lichen."""
    app = into / "recsys"
    if revision == "now":
        import shutil

        shutil.copytree(APP, app, ignore=shutil.ignore_patterns(".lichen", "__pycache__"))
        return app
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "examples/recsys"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into / "archive", filter="data")
    (into / "archive" / "examples" / "recsys").rename(app)
    return app


class TreeMemory(threading.Thread):
    """Samples the PSS of a process and everything under it: [(time, bytes)]."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.period_s, self.samples = psutil.Process(pid), period_s, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period_s):
            total = 0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:
                    pass
            self.samples.append((time.time(), total))


def with_memory(app: Path, memory: dict[str, str]) -> None:
    """Give the copied app's jobs these memory limits (resources.memory), as the memory refusal suggests."""
    if not memory:
        return
    import yaml

    spec_path = app / "lichen.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    for job, size in memory.items():
        spec["jobs"][job].setdefault("resources", {})["memory"] = size
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))


def run_pipeline(revision: str, data: Path, jobs: tuple[str, ...] = JOBS, memory: dict[str, str] | None = None
                 ) -> dict:
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as scratch:
        app = app_at(revision, Path(scratch))
        with_memory(app, memory or {})
        env = {k: v for k, v in os.environ.items() if k != "RECSYS_WORKERS"}
        started = time.perf_counter()
        names = [] if jobs == JOBS else list(jobs)
        process = subprocess.Popen([LICHEN, "run", *names, "--app", str(app), "--data", str(data)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        memory = TreeMemory(process.pid)
        memory.start()
        output, _ = process.communicate(timeout=7200)
        memory.done.set()
        memory.join()
        wall_s = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"lichen run ({revision}) failed:\n{output[-4000:]}")
        runs = json.loads(subprocess.run([LICHEN, "runs", "--app", str(app), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        jobs_seen = {}
        for run in runs:  # newest first: the first of each job is this pipeline's
            if run["job"] in jobs_seen:
                continue
            peak = max((b for t, b in memory.samples if run["started_at"] <= t <= run["ended_at"]), default=0)
            jobs_seen[run["job"]] = {"s": run["duration_s"], "peak_pss_mib": peak / 2**20,
                                     "max_rss_mib": (run.get("max_rss_bytes") or 0) / 2**20}
        found = sorted((app / ".lichen" / "evaluations").glob("*.json"))
        evaluation = json.loads(found[0].read_text()) if found else {}
        summary = evaluation.get("summary", {})
        promoted = next((line for line in output.splitlines() if "promoted recommender" in line), "")
        return {"wall_s": wall_s, "jobs": jobs_seen, "summary": summary, "seeds": evaluation.get("seeds"),
                "eval_users": evaluation.get("eval_users"),
                "promoted": next((kind for kind in summary if f"({kind}," in promoted), None),
                "peak_pss_mib": max((b for _, b in memory.samples), default=0) / 2**20}


def size_data(size: str, scratch: Path) -> tuple[Path, str]:
    if size == "ml100k":
        if not (ML100K / "u.data").is_file():
            raise SystemExit(f"no MovieLens 100K at {ML100K}")
        return ML100K, "MovieLens 100K (943 users, 1,682 items, 100,000 ratings)"
    from recsys.synthesizing import synthesize_at_scale, write_ratings_csv

    data = synthesize_at_scale(*(ML20M if size == "ml20m" else SMALL), seed=0)
    path = scratch / "ratings.csv"
    write_ratings_csv(data, path)
    name = "ML-20M's shape" if size == "ml20m" else "ml-latest-small size"
    return path, f"synthetic, {name} ({data.n_users:,} users, {data.n_items:,} items, {len(data):,} ratings)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="ml100k,small", help="comma-separated: ml100k, small, ml20m")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated jobs to run (default: all four)")
    parser.add_argument("--baseline", default="b5be944", help="git revision of the 'before' app, or none")
    parser.add_argument("--memory", default="", metavar="JOB=SIZE,...",
                        help="memory limits for the copied app's jobs, e.g. train=12Gi,evaluate=12Gi (ML-20M's EASE "
                             "and ItemKNN need 3.2 GiB each; the shipped spec gives train 4Gi)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    memory = dict(part.split("=", 1) for part in args.memory.split(",") if part.strip())
    results = {}
    with tempfile.TemporaryDirectory(prefix="recsys-data-") as scratch:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            data, label = size_data(size, Path(scratch))
            jobs = tuple(job for job in JOBS if job in args.jobs.split(","))
            before = run_pipeline(args.baseline, data, jobs, memory) if args.baseline != "none" else None
            after = run_pipeline("now", data, jobs, memory)
            results[size] = {"data": label, "before": before, "after": after, "cores": len(os.sched_getaffinity(0))}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    console = Console()
    for size, result in results.items():
        before, after = result["before"], result["after"]
        table = Table(title=f"lichen run on {result['data']}, {result['cores']} cores")
        for column in ("job", f"before {args.baseline} (s)", "after (s)", "after / before", "after peak PSS (MiB)",
                       "after largest RSS (MiB)"):
            table.add_column(column, justify="left" if column == "job" else "right")
        for job in (job for job in JOBS if job in after["jobs"]):
            b = before["jobs"][job]["s"] if before else None
            a = after["jobs"][job]
            table.add_row(job, f"{b:.1f}" if b is not None else "-", f"{a['s']:.1f}",
                          f"{a['s'] / b:.2f}" if b else "-", f"{a['peak_pss_mib']:.0f}", f"{a['max_rss_mib']:.0f}")
        b = before["wall_s"] if before else None
        table.add_row("pipeline (wall)", f"{b:.1f}" if b else "-", f"{after['wall_s']:.1f}",
                      f"{after['wall_s'] / b:.2f}" if b else "-", f"{after['peak_pss_mib']:.0f}", "")
        console.print(table)
        summary = after["summary"]
        if not summary:
            continue
        seeds = ",".join(map(str, after["seeds"] or []))
        models = Table(title=f"after: test metrics @10, mean over seeds {seeds}"
                             + (f", {after['eval_users']:,} users ranked" if after.get("eval_users") else ""))
        for column in ("model", "NDCG@10", "Recall@10", "before NDCG@10"):
            models.add_column(column, justify="left" if column == "model" else "right")
        for kind, row in sorted(summary.items(), key=lambda kv: -kv[1]["ndcg"]):
            old = before["summary"].get(kind, {}).get("ndcg") if before else None
            models.add_row(kind, f"{row['ndcg']:.4f}", f"{row['recall']:.4f}", f"{old:.4f}" if old else "-")
        console.print(models)
        best = max(summary, key=lambda kind: summary[kind]["ndcg"])
        console.print(f"promoted by mean validation: {after['promoted']}; best on test: {best}"
                      + (f"; before, promoted {before['promoted']}" if before else ""))


if __name__ == "__main__":
    main()
