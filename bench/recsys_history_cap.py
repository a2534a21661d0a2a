"""What capping the served history costs in quality: EASE refit on train+valid (RecBole's split, seeds
0,1,2, λ=300) tested with each user's whole history scored, and with only their ``h`` most recent items
scored (by timestamp; the rest of the history is still never recommended). Full and capped are scored on
the same split in the same run; the ratio is capped / full NDCG@10.

A capped history was considered for bounding the serving work of heavy users and rejected on these
figures (ML-100K: 0.946× the NDCG@10 with 200 items scored); the recommender keeps certified
candidates for them instead (``recsys.models.candidates``), which changes no answer.

    .venv/bin/python bench/recsys_history_cap.py                     # ML-100K from ../shared/data/ml-100k
    .venv/bin/python bench/recsys_history_cap.py --data ratings.csv  # any file `recsys-ingest` reads
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

import scipy.sparse as sp  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recsys.evaluating import fit, ranking_metrics, top_k  # noqa: E402
from recsys.ingesting import read_ratings  # noqa: E402
from recsys.interactions import IdMap, Interactions, interaction_matrix  # noqa: E402
from recsys.splits import split_by_user  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
CAPS = (25, 50, 100, 200, 400)


def history_matrix(data: Interactions, users: IdMap, items: IdMap) -> sp.csr_matrix:
    """The binary user × item matrix of :func:`interaction_matrix`, with each row's items in time order.

    Within a row the indices run from the oldest interaction to the newest (a repeated item is placed at
    its latest time; ties by item index), so the last ``h`` entries of a row are the user's ``h`` most
    recent items (:func:`recent_rows`). The rows' indices are deliberately not sorted by item."""
    rows = users.index(data.users)
    cols = items.index(data.items)
    keep = (rows >= 0) & (cols >= 0)
    rows, cols, times = rows[keep], cols[keep], data.timestamps[keep]
    order = np.lexsort((cols, times, rows))  # by row, then time, then item
    rows, cols = rows[order], cols[order]
    # a repeated (row, item) keeps its last (latest) place: drop an entry when the same pair comes later
    last = np.ones(len(rows), bool)
    if len(rows):
        pair = rows.astype(np.int64) * max(1, len(items)) + cols
        _, first_from_end = np.unique(pair[::-1], return_index=True)
        last[:] = False
        last[len(pair) - 1 - first_from_end] = True
    rows, cols = rows[last], cols[last]
    indptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(users)), out=indptr[1:])
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), cols.astype(np.int32), indptr.astype(np.int32)),
                           shape=(len(users), len(items)))
    matrix.has_sorted_indices = False
    return matrix


def recent_rows(matrix: sp.csr_matrix, max_history: int) -> sp.csr_matrix:
    """Each row cut to its last ``max_history`` entries (its most recent items, for a
    :func:`history_matrix`); the matrix itself when no row is longer."""
    lengths = np.diff(matrix.indptr)
    if max_history <= 0 or len(lengths) == 0 or lengths.max() <= max_history:
        return matrix
    kept = np.minimum(lengths, max_history)
    indptr = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(kept, out=indptr[1:])
    # position of each kept entry in the old arrays: the row's end minus how far from the end it is
    row_of = np.repeat(np.arange(len(lengths)), kept)
    from_end = indptr[1:][row_of] - np.arange(indptr[-1])
    take = matrix.indptr[1:][row_of] - from_end
    out = sp.csr_matrix((matrix.data[take], matrix.indices[take], indptr), shape=matrix.shape)
    out.has_sorted_indices = False
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ML100K, help="a ratings file (default: MovieLens 100K)")
    parser.add_argument("--caps", default=",".join(map(str, CAPS)), help="history caps to test")
    parser.add_argument("--l2", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"no ratings file at {args.data}")
    caps = [int(c) for c in args.caps.split(",")]
    table_data = read_ratings(args.data)
    data = Interactions.from_arrays(table_data.users, table_data.items, table_data.ratings, table_data.timestamps)
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    ndcg: dict[str, list[float]] = {}
    affected: dict[int, list[float]] = {}
    for seed in (0, 1, 2):
        train, valid, test = split_by_user(data, (0.8, 0.1, 0.1), seed)
        seen_rows = np.concatenate([train, valid])
        seen = history_matrix(data.subset(seen_rows), users, items)  # time order within each row
        truth = interaction_matrix(data.subset(test), users, items)
        model = fit("ease", {"l2": args.l2}, seen, users, items)
        ndcg.setdefault("full", []).append(ranking_metrics(top_k(model, seen, seen), truth)["ndcg"])
        lengths = np.diff(seen.indptr)
        for cap in caps:
            capped = recent_rows(seen, cap)
            ndcg.setdefault(str(cap), []).append(ranking_metrics(top_k(model, capped, seen), truth)["ndcg"])
            affected.setdefault(cap, []).append(float((lengths > cap).mean()))
    full = float(np.mean(ndcg["full"]))
    lengths = np.diff(history_matrix(data, users, items).indptr)
    table = Table(title=f"EASE (λ={args.l2:g}) on {args.data.name} ({len(users):,} users, {len(items):,} items; "
                        f"history median {np.median(lengths):.0f}, p99 {np.percentile(lengths, 99):.0f}, "
                        f"max {lengths.max():,}): test NDCG@10, mean of seeds 0,1,2")
    for column in ("items of history scored", "users capped", "NDCG@10", "capped / full"):
        table.add_column(column, justify="right")
    table.add_row("all", "0 %", f"{full:.4f}", "1.000")
    for cap in caps:
        mean = float(np.mean(ndcg[str(cap)]))
        table.add_row(f"{cap} most recent", f"{np.mean(affected[cap]):.1%}", f"{mean:.4f}", f"{mean / full:.3f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
