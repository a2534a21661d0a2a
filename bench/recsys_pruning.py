"""What pruning EASE's weights would cost in quality: EASE refit on train+valid (RecBole's split, seeds
0,1,2, λ=300) tested dense and with each row of B cut to its ``m`` largest weights by magnitude, the
sparse form that would bound the serving work per item of history. Dense and pruned are scored on
the same split in the same run; the ratio is pruned / dense NDCG@10.

    .venv/bin/python bench/recsys_pruning.py            # ML-100K from ../shared/data/ml-100k
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recsys.evaluating import fit, make_split, ranking_metrics, top_k  # noqa: E402
from recsys.ingesting import read_ratings  # noqa: E402
from recsys.interactions import Interactions  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
KEPT = (64, 128, 256, 512)


class Pruned:
    """EASE's B with each row cut to its ``m`` largest weights by magnitude (scores only)."""

    def __init__(self, weights: np.ndarray, m: int) -> None:
        keep = np.argpartition(-np.abs(weights), m, axis=1)[:, :m]
        rows = np.repeat(np.arange(weights.shape[0]), m)
        self.weights = sp.csr_matrix((np.take_along_axis(weights, keep, axis=1).ravel(), (rows, keep.ravel())),
                                     shape=weights.shape)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return (histories @ self.weights).toarray()


def main() -> None:
    if not ML100K.is_file():
        raise SystemExit(f"no MovieLens 100K at {ML100K}")
    table_data = read_ratings(ML100K)
    data = Interactions.from_arrays(table_data.users, table_data.items, table_data.ratings, table_data.timestamps)
    ndcg: dict[str, list[float]] = {}
    for seed in (0, 1, 2):
        split = make_split(data, seed)
        seen = split.train + split.valid
        seen.data[:] = 1.0
        model = fit("ease", {"l2": 300.0}, seen, split.users, split.items)
        ndcg.setdefault("dense", []).append(ranking_metrics(top_k(model, seen, seen), split.test)["ndcg"])
        for m in KEPT:
            scores = Pruned(model.weights, m)
            ndcg.setdefault(f"{m}", []).append(ranking_metrics(top_k(scores, seen, seen), split.test)["ndcg"])
    dense = float(np.mean(ndcg["dense"]))
    table = Table(title=f"EASE on ML-100K ({data.n_items:,} items), test NDCG@10, mean of seeds 0,1,2")
    for column in ("weights kept per row", "share of the row", "NDCG@10", "pruned / dense"):
        table.add_column(column, justify="right")
    table.add_row(f"all {data.n_items:,}", "100 %", f"{dense:.4f}", "1.000")
    for m in KEPT:
        mean = float(np.mean(ndcg[f"{m}"]))
        table.add_row(f"{m}", f"{m / data.n_items:.1%}", f"{mean:.4f}", f"{mean / dense:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
