"""Quality past EASE: the NTK kernel ridge against EASE and ALS, under the README's protocol, on MovieLens 100K
and on data derived from it that nothing was tuned on.

    .venv/bin/python bench/recsys_quality.py            # three datasets, 3 seeds each (about 2 minutes)
    .venv/bin/python bench/recsys_quality.py --json

Datasets (all read in place from ../shared/data/ml-100k; a synthetic set of the same shape stands in without it):

- ``ml100k``: every rating, as the README's table;
- ``liked``: only ratings of 4 and 5 (55,375 interactions): a sparser, differently shaped implicit set;
- ``half users``: the even-numbered users only (472 users): less data to learn from.

Every model is tuned on each seed's validation split with its grid (``recsys.evaluating.GRIDS``), refit on
train+valid and tested; the figures are means over the seeds, with the kernel's ratio to EASE and the
model ``train`` would promote (best mean validation NDCG@10). "params" is the configuration ``train`` picks
(validation averaged over the seeds) and "NDCG@10 at params" tests that one configuration on every seed; the
NDCG@10 and Recall@10 columns let each seed keep its own validation winner (the README's protocol). Nothing
here is chosen on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from recsys.evaluating import evaluate_kind, make_split  # noqa: E402
from recsys.interactions import Interactions  # noqa: E402
from recsys.synthesizing import synthesize  # noqa: E402
from recsys.training import choose_params, metrics_at_params, summarise  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
MODELS = ("kernel", "ease", "als")
SEEDS = (0, 1, 2)


def datasets() -> tuple[dict[str, Interactions], str]:
    if ML100K.is_file():
        raw = np.loadtxt(ML100K, dtype=np.int64)
        source = "MovieLens 100K"
    else:
        data = synthesize(943, 1682, seed=0)
        raw = np.column_stack([data.users, data.items, np.round(data.ratings).astype(np.int64), data.timestamps])
        source = "SYNTHETIC (ML-100K not found at ../shared/data/ml-100k)"

    def of(rows: np.ndarray) -> Interactions:
        return Interactions.from_arrays(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.float32), rows[:, 3])

    return {"ml100k": of(raw), "liked": of(raw[raw[:, 2] >= 4]), "half users": of(raw[raw[:, 0] % 2 == 0])}, source


def measure() -> dict:
    sets, source = datasets()
    out = {"source": source, "seeds": list(SEEDS), "datasets": {}}
    with threadpool_limits(1, "blas"):
        for name, data in sets.items():
            started = time.perf_counter()
            splits = [make_split(data, seed) for seed in SEEDS]
            rows = {}
            for kind in MODELS:
                runs = [evaluate_kind(kind, split, threads=1) for split in splits]
                params = choose_params(kind, runs)
                result = summarise(kind, runs, params)
                rows[kind] = {"ndcg": result["test"]["ndcg"], "recall": result["test"]["recall"],
                              "valid_ndcg": result["valid"]["ndcg"], "params": result["params"],
                              "ndcg_by_seed": [run["test"]["ndcg"] for run in runs],
                              "promoted_config_ndcg": metrics_at_params(kind, splits, runs, params, threads=1)["ndcg"]}
            promoted = max(rows, key=lambda kind: rows[kind]["valid_ndcg"])
            out["datasets"][name] = {"interactions": len(data), "users": data.n_users, "items": data.n_items,
                                     "models": rows, "promoted": promoted,
                                     "kernel_over_ease_ndcg": rows["kernel"]["ndcg"] / rows["ease"]["ndcg"],
                                     "kernel_over_ease_recall": rows["kernel"]["recall"] / rows["ease"]["recall"],
                                     "seconds": time.perf_counter() - started}
    return out


def render(result: dict, console: Console) -> None:
    table = Table(title=f"test @10, mean over seeds {result['seeds']}, {result['source']} and sets derived from it")
    for column in ("dataset", "interactions", "model", "NDCG@10", "Recall@10", "valid NDCG@10", "params",
                   "NDCG@10 at params"):
        table.add_column(column, justify="left" if column in ("dataset", "model", "params") else "right")
    for name, entry in result["datasets"].items():
        for kind, row in entry["models"].items():
            table.add_row(name, f"{entry['interactions']:,}", kind + (" (promoted)" if kind == entry["promoted"] else ""),
                          f"{row['ndcg']:.4f}", f"{row['recall']:.4f}", f"{row['valid_ndcg']:.4f}",
                          json.dumps(row["params"]), f"{row['promoted_config_ndcg']:.4f}")
    console.print(table)
    for name, entry in result["datasets"].items():
        console.print(f"{name}: kernel / EASE NDCG@10 {entry['kernel_over_ease_ndcg']:.3f}×, Recall@10 "
                      f"{entry['kernel_over_ease_recall']:.3f}×; train would promote {entry['promoted']} "
                      f"({entry['seconds']:.0f} s)")


def run_bench(description: str, measure, render, argv: list[str] | None = None) -> int:
    """Measure, then print the result as a table, or as JSON with --json (this bench's and its kin's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = measure()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, Console(highlight=False, width=160))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(__doc__.splitlines()[0], measure, render, argv)


if __name__ == "__main__":
    sys.exit(main())
