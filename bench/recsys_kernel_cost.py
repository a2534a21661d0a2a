"""What the NTK kernel ridge costs to tune, against EASE on the same split: the figures behind ``train``'s
default limits for it (``recsys.models.kernel_ridge.default_refusal``).

    .venv/bin/python bench/recsys_kernel_cost.py                 # ML-1M's shape and the 8,000² eigendecomposition
    .venv/bin/python bench/recsys_kernel_cost.py --shapes ml100k --no-eigh

For each shape (synthetic, ``recsys.synthesizing.synthesize_at_scale``), one split seed: the whole protocol of
``recsys.evaluating.evaluate_kind`` for EASE and for the kernel (tune every grid point on valid, refit on
train+valid, test), one BLAS thread, back to back, with both times and their ratio and the kernel's refit time.
Then one float32 eigendecomposition of 8,000 × 8,000 (the largest side ``train`` takes by default) with one
and with two BLAS threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from recsys.evaluating import evaluate_kind, make_split  # noqa: E402
from recsys.models.kernel_ridge import default_refusal  # noqa: E402
from recsys.synthesizing import synthesize_at_scale  # noqa: E402

SHAPES = {"ml100k": (943, 1_682, 100_000), "ml1m": (6_040, 3_706, 1_000_209)}


def tune_both(shape: str) -> dict:
    users, items, ratings = SHAPES[shape]
    data = synthesize_at_scale(users, items, ratings, seed=0)
    split = make_split(data, 0)
    row = {"shape": shape, "users": data.n_users, "items": data.n_items, "interactions": len(data),
           "default": default_refusal(data.n_users, data.n_items) or "trained by default"}
    with threadpool_limits(1, "blas"):
        for kind in ("ease", "kernel"):
            started = time.perf_counter()
            result = evaluate_kind(kind, split, threads=1)
            row[kind] = {"seconds": time.perf_counter() - started, "refit_s": result["fit_s"],
                         "ndcg": result["test"]["ndcg"], "params": result["params"], "points": result["trials"]}
    row["ratio"] = row["kernel"]["seconds"] / row["ease"]["seconds"]
    return row


def eigh_seconds(n: int = 8_000) -> dict[int, float]:
    rng = np.random.default_rng(0)
    factor = rng.random((n, 400), dtype=np.float32)
    kernel = factor @ factor.T / 400 + np.eye(n, dtype=np.float32)
    out = {}
    for threads in (1, 2):
        work = kernel.copy()
        with threadpool_limits(threads, "blas"):
            started = time.perf_counter()
            scipy.linalg.eigh(work, overwrite_a=True, check_finite=False, driver="evd")
            out[threads] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="ml1m", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--no-eigh", action="store_true", help="skip the 8,000 × 8,000 eigendecomposition")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=160)
    table = Table(title="one split seed, the whole protocol (tune on valid, refit, test), one BLAS thread")
    for column in ("shape", "users × items", "EASE s", "kernel s", "kernel / EASE", "kernel refit s",
                   "NDCG@10 EASE / kernel", "train's default"):
        table.add_column(column, justify="left" if column in ("shape", "train's default") else "right")
    for shape in args.shapes.split(","):
        row = tune_both(shape.strip())
        table.add_row(row["shape"], f"{row['users']:,} × {row['items']:,}", f"{row['ease']['seconds']:.1f}",
                      f"{row['kernel']['seconds']:.1f}", f"{row['ratio']:.1f}×", f"{row['kernel']['refit_s']:.1f}",
                      f"{row['ease']['ndcg']:.4f} / {row['kernel']['ndcg']:.4f}", row["default"])
    console.print(table)
    console.print("(synthetic data: the NDCG figures say little about the models, only the times do)")
    if not args.no_eigh:
        seconds = eigh_seconds()
        console.print(f"float32 eigendecomposition of 8,000 × 8,000: {seconds[1]:.1f} s with one BLAS thread, "
                      f"{seconds[2]:.1f} s with two (ratio {seconds[2] / seconds[1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
