"""How the kernel model's default damping was chosen: validation NDCG@10 for each damping, on the three
datasets of bench/recsys_quality.py, with the test figures beside them.

    .venv/bin/python bench/recsys_kernel_damping.py            # about a minute on 2 idle cores
    .venv/bin/python bench/recsys_kernel_damping.py --json

Damping weighs each item in a user's history by (its number of users) ** -damping, and each user in an
item's column by (their number of items) ** -damping, before the kernels compare them
(recsys.models.kernel_ridge). For each damping the kernel's usual grid (``GRIDS["kernel"]``: l2 × power) is
tuned on each seed's validation split, refit on train+valid and tested, as ``train`` does. The default
(``DEFAULT_DAMPING``) is the damping with the best validation NDCG@10 averaged over the datasets; the test
columns show what that choice gives, and are not used to make it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from recsys.evaluating import GRIDS, evaluate_kind, make_split  # noqa: E402
from recsys.models.kernel_ridge import DEFAULT_DAMPING  # noqa: E402
from recsys.training import choose_params, summarise  # noqa: E402
from recsys_quality import SEEDS, datasets, run_bench  # noqa: E402

DAMPINGS = (0.0, 0.25, 0.5)


def measure() -> dict:
    sets, source = datasets()
    out = {"source": source, "seeds": list(SEEDS), "dampings": list(DAMPINGS), "default": DEFAULT_DAMPING,
           "datasets": {}}
    with threadpool_limits(1, "blas"):
        for name, data in sets.items():
            splits = [make_split(data, seed) for seed in SEEDS]
            rows = {}
            for damping in DAMPINGS:
                started = time.perf_counter()
                grid = [{**point, "damping": damping} for point in GRIDS["kernel"]]
                runs = [evaluate_kind("kernel", split, grid=grid, threads=1) for split in splits]
                result = summarise("kernel", runs, choose_params("kernel", runs))
                rows[str(damping)] = {"valid_ndcg": result["valid"]["ndcg"], "test_ndcg": result["test"]["ndcg"],
                                      "test_recall": result["test"]["recall"], "params": result["params"],
                                      "seconds": time.perf_counter() - started}
            out["datasets"][name] = rows
    means = {str(d): sum(rows[str(d)]["valid_ndcg"] for rows in out["datasets"].values()) / len(out["datasets"])
             for d in DAMPINGS}
    out["mean_valid_ndcg"] = means
    out["chosen_by_validation"] = float(max(means, key=means.get))
    return out


def render(result: dict, console: Console) -> None:
    table = Table(title=f"kernel model by damping, mean over seeds {result['seeds']}, {result['source']} and sets "
                        "derived from it")
    for column in ("dataset", "damping", "valid NDCG@10", "test NDCG@10", "test Recall@10", "params", "s"):
        table.add_column(column, justify="left" if column in ("dataset", "params") else "right")
    for name, rows in result["datasets"].items():
        for damping, row in rows.items():
            table.add_row(name, damping, f"{row['valid_ndcg']:.4f}", f"{row['test_ndcg']:.4f}",
                          f"{row['test_recall']:.4f}", json.dumps({k: row["params"][k] for k in ("l2", "power")}),
                          f"{row['seconds']:.0f}")
    console.print(table)
    console.print("validation NDCG@10 averaged over the datasets: "
                  + ", ".join(f"damping {d}: {v:.4f}" for d, v in result["mean_valid_ndcg"].items()))
    console.print(f"chosen by validation: {result['chosen_by_validation']}; DEFAULT_DAMPING is {result['default']}"
                  + ("" if result["chosen_by_validation"] == result["default"] else "  (they differ)"))


def main(argv: list[str] | None = None) -> int:
    return run_bench(" ".join(__doc__.split("\n\n")[0].split()), measure, render, argv)


if __name__ == "__main__":
    sys.exit(main())
