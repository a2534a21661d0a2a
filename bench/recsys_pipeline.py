"""The recommender pipeline end to end (`lichen run`: ingest → features → train → evaluate), per job, with the
models of `train` and the (seed, model) evaluations of `evaluate` in one process (RECSYS_WORKERS=1, as before)
and in one process per core the job may use (the default), in one run, on a fresh copy of the app each time.

    .venv/bin/python bench/recsys_pipeline.py            # ML-100K from ../shared/data/ml-100k
    .venv/bin/python bench/recsys_pipeline.py --json

It also checks that both give the same test metrics (the parallel evaluation puts its results back in order).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "recsys"
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
LICHEN = str(Path(sys.executable).parent / "lichen")
JOBS = ("ingest", "features", "train", "evaluate")


def run_pipeline(data: Path, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as scratch:
        app = Path(scratch) / "recsys"
        shutil.copytree(APP, app, ignore=shutil.ignore_patterns(".lichen", "__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != "RECSYS_WORKERS"}
        if workers is not None:
            env["RECSYS_WORKERS"] = str(workers)
        started = time.perf_counter()
        done = subprocess.run([LICHEN, "run", "--app", str(app), "--data", str(data)], env=env,
                              capture_output=True, text=True, timeout=3600)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"lichen run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        runs = json.loads(subprocess.run([LICHEN, "runs", "--app", str(app), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        per_job = {}
        for run in runs:  # newest first: the first of each job is this pipeline's
            per_job.setdefault(run["job"], run["duration_s"])
        evaluation = json.loads(next((app / ".lichen" / "evaluations").glob("*.json")).read_text())
        return {"wall_s": wall_s, "jobs": per_job, "summary": evaluation["summary"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"no data at {args.data} (MovieLens 100K is read from ../shared/data/ml-100k)")
    before = run_pipeline(args.data, workers=1)
    after = run_pipeline(args.data, workers=None)
    same = all(abs(before["summary"][m][k] - after["summary"][m][k]) < 1e-12
               for m in before["summary"] for k in ("ndcg", "recall", "mrr", "hit"))
    result = {"data": str(args.data), "cores": len(os.sched_getaffinity(0)), "one_process": before,
              "per_core": after, "same_metrics": same}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"lichen run on {args.data.name}: one process vs one per core ({result['cores']} cores)")
    for column in ("job", "one process (s)", "per core (s)", "ratio"):
        table.add_column(column, justify="right" if column != "job" else "left")
    for job in JOBS:
        b, a = before["jobs"].get(job, 0.0), after["jobs"].get(job, 0.0)
        table.add_row(job, f"{b:.1f}", f"{a:.1f}", f"{a / b:.2f}" if b else "-")
    table.add_row("pipeline (wall)", f"{before['wall_s']:.1f}", f"{after['wall_s']:.1f}",
                  f"{after['wall_s'] / before['wall_s']:.2f}")
    console = Console()
    console.print(table)
    ease = after["summary"]["ease"]
    console.print(f"same test metrics both ways: {same} (EASE NDCG@10 {ease['ndcg']:.4f}, mean of "
                  f"{int(ease['seeds'])} seeds)")


if __name__ == "__main__":
    main()
