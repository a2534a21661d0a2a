"""EASE and ALS on a GPU against these CPUs, in one run, on a synthetic set of ML-20M's shape.

    .venv/bin/python bench/recsys_gpu.py                        # 138,493 users, 27,278 items, 20M ratings
    .venv/bin/python bench/recsys_gpu.py --scale 0.3            # a smaller set of the same proportions
    .venv/bin/python bench/recsys_gpu.py --scale 0.05 --accelerator torch-cpu   # the device code path, on the CPU

Both sides fit the same data with the same parameters: EASE (λ=300) through LAPACK with every core's BLAS
thread, then through ``recsys.models.accelerators`` (torch or CuPy on the GPU the process sees); ALS
(64 factors, 15 iterations) through ``implicit`` on the CPU, then ``implicit``'s CUDA build. It prints
each side's time, their ratio, and how far the two EASE weight matrices are apart. Where no GPU is
visible (or ``implicit`` has no CUDA) it says so and reports the CPU side alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

ML20M = (138_493, 27_278, 20_000_263)


def timed(fit):
    started = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of ML-20M's users, items and ratings")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "torch-cpu"),
                        help="the device side: auto (a GPU), or torch-cpu to run its code path on the CPU here")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from recsys.interactions import IdMap, interaction_matrix
    from recsys.models import make_model
    from recsys.models.accelerators import find_accelerator
    from recsys.synthesizing import synthesize_at_scale

    console = Console(highlight=False)
    users, items, ratings = (max(10, int(x * args.scale)) for x in ML20M)
    data = synthesize_at_scale(users, items, ratings, seed=0)
    user_map, item_map = IdMap.of(data.users), IdMap.of(data.items)
    matrix = interaction_matrix(data, user_map, item_map)
    cores = len(os.sched_getaffinity(0))
    console.print(f"{matrix.shape[0]:,} users, {matrix.shape[1]:,} items, {matrix.nnz:,} interactions; {cores} cores")
    os.environ["RECSYS_ACCELERATOR"] = "none"
    with threadpool_limits(cores, "blas"):
        cpu_ease, cpu_ease_s = timed(lambda: make_model("ease", l2=300.0).fit(matrix, user_map, item_map))
    cpu_als, cpu_als_s = timed(lambda: make_model("als", factors=64, regularization=5.0, alpha=3.0, iterations=15,
                                                  threads=cores).fit(matrix, user_map, item_map))
    table = Table(title="fit time, one run")
    for column in ("model", "CPU (s)", "GPU (s)", "GPU / CPU", "GPU path"):
        table.add_column(column, justify="left" if column in ("model", "GPU path") else "right")
    os.environ["RECSYS_ACCELERATOR"] = args.accelerator
    accelerator = find_accelerator()
    if accelerator is None:
        table.add_row("EASE", f"{cpu_ease_s:.1f}", "-", "-", "no GPU visible: not run")
        table.add_row("ALS", f"{cpu_als_s:.1f}", "-", "-", "no GPU visible: not run")
        console.print(table)
        return 0
    gpu_ease, gpu_ease_s = timed(lambda: make_model("ease", l2=300.0).fit(matrix, user_map, item_map))
    gap = float(np.max(np.abs(gpu_ease.weights - cpu_ease.weights)))
    table.add_row("EASE", f"{cpu_ease_s:.1f}", f"{gpu_ease_s:.2f}", f"{gpu_ease_s / cpu_ease_s:.3f}",
                  f"{gpu_ease.fitted_on} (largest weight difference {gap:.2e})")
    gpu_als, gpu_als_s = timed(lambda: make_model("als", factors=64, regularization=5.0, alpha=3.0, iterations=15,
                                                  threads=cores).fit(matrix, user_map, item_map))
    on_gpu = gpu_als.fitted_on != "cpu"
    table.add_row("ALS", f"{cpu_als_s:.1f}", f"{gpu_als_s:.2f}" if on_gpu else "-",
                  f"{gpu_als_s / cpu_als_s:.3f}" if on_gpu else "-",
                  gpu_als.fitted_on if on_gpu else "implicit has no CUDA here: CPU only")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
