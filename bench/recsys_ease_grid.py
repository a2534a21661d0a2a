"""What one point of EASE's λ grid costs, three ways, on the same Gram matrix in one run:

- the full inverse the model needs (``potrf`` + ``potri``: P = (XᵀX + λI)⁻¹);
- what tuning needs (``potrf`` + ``trtri``: W = U⁻¹, then X·B from two triangular products;
  ``recsys.models.ease.FactorScores``);
- one symmetric eigendecomposition (``eigh``), the textbook way to serve every λ of a grid from one
  factorisation.

    .venv/bin/python bench/recsys_ease_grid.py              # 8,800 items, one BLAS thread
    .venv/bin/python bench/recsys_ease_grid.py --items 4000 --threads 2

The matrix is the Gram matrix of a random binary user × item matrix (2 % dense) plus λ = 200 on the
diagonal; the times do not depend on its values. Each step is timed once, in float32.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=8_800)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.random((args.users, args.items)) < 0.02).astype(np.float32)
    gram = x.T @ x
    gram[np.diag_indices(args.items)] += np.float32(200.0)
    lapack = scipy.linalg.lapack
    with threadpool_limits(args.threads, "blas"):
        potrf_s, (factor, _) = timed(lapack.spotrf, np.asfortranarray(gram), lower=0, overwrite_a=1)
        potri_s, _ = timed(lapack.spotri, factor.copy(order="F"), lower=0, overwrite_c=1)
        trtri_s, (inverse, _) = timed(lapack.strtri, factor, lower=0, overwrite_c=1)
        dense = np.asfortranarray(x)
        trmm_s, _ = timed(lambda: scipy.linalg.blas.strmm(
            1.0, inverse, scipy.linalg.blas.strmm(1.0, inverse, dense, side=1, lower=0), side=1, lower=0,
            trans_a=1, overwrite_b=1))
        gemm_s, _ = timed(np.matmul, x, gram)
        eigh_s, _ = timed(scipy.linalg.eigh, gram.copy(), driver="evd", overwrite_a=True, check_finite=False)
    full = potrf_s + potri_s
    tuning = potrf_s + trtri_s
    table = Table(title=f"one λ of EASE's grid: {args.items:,} items, {args.threads} BLAS thread(s), float32")
    for column in ("step", "seconds", "/ full inverse"):
        table.add_column(column, justify="left" if column == "step" else "right")
    table.add_row("potrf (Cholesky)", f"{potrf_s:.2f}", "")
    table.add_row("potri (the inverse from the factor: trtri + lauum)", f"{potri_s:.2f}", "")
    table.add_row("trtri (W = U⁻¹ alone)", f"{trtri_s:.2f}", "")
    table.add_row("full inverse: potrf + potri", f"{full:.2f}", "1.00")
    table.add_row("tuning: potrf + trtri", f"{tuning:.2f}", f"{tuning / full:.2f}")
    table.add_row("eigh (one for the whole grid)", f"{eigh_s:.2f}", f"{eigh_s / full:.2f}")
    table.add_row(f"scoring {args.users} users: two trmm (tuning)", f"{trmm_s:.2f}", "")
    table.add_row(f"scoring {args.users} users: X·B as one gemm (full)", f"{gemm_s:.2f}", "")
    Console().print(table)
    Console().print(f"a 5-point grid: {5 * tuning:.1f} s as factorisations for tuning, {5 * full:.1f} s as full "
                    f"inverses, {eigh_s:.1f} s for the eigendecomposition alone")


if __name__ == "__main__":
    main()
