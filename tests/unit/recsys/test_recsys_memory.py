"""The memory guard (recsys.memory_budgets): its arithmetic, refusals before a fit
allocates (with an injected budget, and under a real job's resources.memory),
the default models and parallel fits it allows, and the in-place EASE and
ItemKNN fits whose measured peak it must bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
from lichen import DataError
from rich.console import Console

from recsys import memory_budgets as budgets
from recsys.interactions import IdMap, interaction_matrix
from recsys.memory_budgets import GIB, Catalogue, FixedMemory, fit_peak_bytes, memory_source
from recsys.models import make_model
from recsys.models.ease import EASE
from recsys.models.itemknn import cosine_similarity, keep_top_neighbours
from recsys.synthesizing import synthesize

APP_DIR = Path(__file__).resolve().parents[3] / "examples" / "recsys"
ML20M = Catalogue(n_items=27_278, n_users=138_493, nnz=20_000_263)


def _matrix(data):
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    return interaction_matrix(data, users, items), users, items


@pytest.fixture(scope="module")
def moderate():
    """About 3,000 items: big enough that the n² arrays dominate, small enough to fit in a second."""
    return _matrix(synthesize(2000, 3000, mean_per_user=40, seed=3))


# ------------------------------------------------------------------ arithmetic


def test_block_rows_cap_a_block_at_an_eighth_of_the_matrix_and_2_to_the_24_entries():
    assert budgets.block_rows(3000) == 375  # an eighth of the rows
    assert budgets.block_rows(27_278) == (1 << 24) // 27_278 == 615  # 2²⁴ entries
    assert budgets.block_rows(5) == 1 and budgets.block_rows(0) == 1


def test_fit_peak_bytes_follows_the_documented_formulas():
    n, users, z = 100, 50, 1000
    b = budgets.block_rows(n) * n  # 13 rows × 100
    gram = 2 * z * 8 + 4 * (n + 1) + 8 * b + 4 * (budgets.block_rows(n) + 1)
    assert budgets.gram_bytes(n, z) == gram
    assert budgets.gram_bytes(n, z, np.float64) == gram + 4 * b
    assert fit_peak_bytes("ease", n, users, z) == 4 * n * n + gram + 16 * n
    assert fit_peak_bytes("ease", n, users, z, np.float64) == 12 * n * n + gram + 4 * b + 16 * n
    k = 20
    assert fit_peak_bytes("itemknn", n, users, z, k=k) == 4 * n * n + max(gram, 12 * b + 28 * k * n) + 16 * n
    assert fit_peak_bytes("itemknn", n, users, z, k=10_000) == fit_peak_bytes("itemknn", n, users, z, k=n - 1)
    f = 16
    als = 2 * z * 8 + 4 * (users + n) + 8 * f * (users + n) + 8 * f * n
    assert fit_peak_bytes("als", n, users, z, factors=f) == als
    assert fit_peak_bytes("pop", n, users, z) == 8 * users + 16 * n
    assert fit_peak_bytes("kernel", n, users, z) == 4 * (users**2 + n**2) + 24 * n**2 + 40 * users * n
    with pytest.raises(ValueError, match="unknown model 'bpr'"):
        fit_peak_bytes("bpr", n, users, z)


def test_ml20m_sized_ease_needs_its_float32_gram_and_little_more():
    n = ML20M.n_items
    need = budgets.need_bytes("ease", ML20M)
    assert 4 * n * n < need < 1.2 * 4 * n * n  # 2.8 GiB of Gram; Xᵀ, a slice of it and a block: 0.4 GiB
    assert budgets.format_bytes(need) == "3.2 GiB"
    assert budgets.need_bytes("ease", ML20M, dtype=np.float64) > 3 * 4 * n * n
    assert budgets.need_bytes("als", ML20M) < GIB  # sparse: fits anywhere
    assert budgets.format_bytes(300 * 1024**2) == "300 MiB"


def test_a_fit_may_use_85_percent_of_what_is_available():
    assert budgets.fits(85, 100) and not budgets.fits(86, 100)
    assert budgets.usable_bytes(-5) == 0


def test_plan_keeps_what_fits_in_order():
    kernel = budgets.need_bytes("kernel", ML20M)  # 138k users: a users × users kernel is far past any RAM here
    assert budgets.plan_models(budgets.KINDS, ML20M, 8 * GIB) == (["ease", "als", "itemknn", "pop"],
                                                                  {"kernel": kernel})
    kept, skipped = budgets.plan_models(budgets.KINDS, ML20M, 3 * GIB)
    assert kept == ["als", "pop"]
    assert skipped == {"kernel": kernel, "ease": budgets.need_bytes("ease", ML20M),
                       "itemknn": budgets.need_bytes("itemknn", ML20M)}


def test_parallel_fits_let_only_as_many_run_as_fit_together():
    needs = [3 * GIB, 3 * GIB, GIB]
    assert budgets.parallel_fits(needs, 8 * GIB, wanted=3) == 2  # 6 GiB of 6.8 usable; all three need 7
    assert budgets.parallel_fits(needs, 16 * GIB, wanted=3) == 3
    assert budgets.parallel_fits(needs, 4 * GIB, wanted=3) == 1  # one at a time (and that one checks itself)
    assert budgets.parallel_fits(needs, 1 * GIB, wanted=2) == 1
    assert budgets.parallel_fits([10, 10], 10**9, wanted=1) == 1


# ------------------------------------------------------------------ refusals


def test_a_fit_that_does_not_fit_is_refused_before_it_allocates(small_data, monkeypatch):
    matrix, users, items = _matrix(small_data)
    catalogue = Catalogue(matrix.shape[1], matrix.shape[0], matrix.nnz)
    need = budgets.need_bytes("ease", catalogue, {"l2": 100.0})
    built = []
    monkeypatch.setattr("recsys.models.ease.dense_gram", lambda *a, **k: built.append(a) or pytest.fail("allocated"))
    monkeypatch.delenv("LICHEN_JOB", raising=False)
    available = need  # 85 % of it is usable: not enough
    with memory_source(FixedMemory(available, "free RAM on this machine")), pytest.raises(DataError) as refused:
        EASE(l2=100.0).fit(matrix, users, items)
    fitting = [k for k in budgets.KINDS if k != "ease" and budgets.fits(budgets.need_bytes(k, catalogue), available)]
    assert fitting and "ease" not in fitting
    message = str(refused.value)
    assert built == []
    assert message.startswith(f"--models ease: EASE on {matrix.shape[1]:,} items ({matrix.shape[0]:,} users, "
                              f"{matrix.nnz:,} interactions) needs {budgets.format_bytes(need)}, "
                              f"{budgets.format_bytes(available)} available (free RAM on this machine")
    assert f"--models {','.join(fitting)}, or free memory or use a machine with more" in message


def test_under_lichen_run_the_refusal_names_the_job_and_the_fix(small_data, monkeypatch):
    matrix, users, items = _matrix(small_data)
    monkeypatch.setenv("LICHEN_JOB", "train")
    with memory_source(FixedMemory(10_000, "the job's memory limit", job_limit=True)), \
            pytest.raises(DataError) as refused:
        make_model("itemknn", k=20).fit(matrix, users, items)
    message = str(refused.value)
    assert message.startswith("train --models itemknn: ItemKNN on ")
    assert message.endswith("train --models pop, or give the job more memory (resources.memory in lichen.yaml)")


def test_enough_memory_fits_and_a_failed_float32_cholesky_retries_in_float64_only_if_that_fits(
        small_data, monkeypatch):
    matrix, users, items = _matrix(small_data)
    n_users, n_items = matrix.shape
    float32 = fit_peak_bytes("ease", n_items, n_users, matrix.nnz)
    float64 = fit_peak_bytes("ease", n_items, n_users, matrix.nnz, np.float64)
    reference = EASE(l2=100.0).fit(matrix, users, items).weights
    monkeypatch.setattr(scipy.linalg.lapack, "spotrf", lambda a, **kw: (a, 3))  # "not positive definite"
    between = int(float32 / 0.85) + 1
    assert not budgets.fits(float64, between)
    expected = rf"float32 Cholesky failed at l2=100 .* the float64 retry on {n_items} items needs .*: raise l2"
    with memory_source(FixedMemory(between, "free RAM on this machine")), pytest.raises(DataError, match=expected):
        EASE(l2=100.0).fit(matrix, users, items)
    with memory_source(FixedMemory(int(float64 / 0.85) + 1)):
        retried = EASE(l2=100.0).fit(matrix, users, items).weights
    assert retried.dtype == np.float32 and retried.flags.c_contiguous
    np.testing.assert_allclose(retried, reference, atol=1e-4)


def test_default_models_keep_what_fits_and_say_what_was_skipped(monkeypatch):
    from recsys.jobs import _default_models

    manifest = {"items": ML20M.n_items, "users": ML20M.n_users, "rows": ML20M.nnz}
    console = Console(record=True, width=300)
    with memory_source(FixedMemory(8 * GIB)):
        assert _default_models(None, manifest, console) == ["ease", "als", "itemknn", "pop"]
    skipped = [line for line in console.export_text().splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "skipping kernel: its fit eigendecomposes a 138,493 × 138,493 kernel" in skipped[0]
    with memory_source(FixedMemory(3 * GIB, "the job's memory limit", job_limit=True)):
        assert _default_models(None, manifest, console) == ["als", "pop"]
        assert _default_models(["ease"], manifest, console) == ["ease"]  # asked for: its fit says why it can't
        with pytest.raises(DataError, match="no model fits"), memory_source(FixedMemory(1000)):
            _default_models(None, manifest, console)
    text = console.export_text()
    assert (f"skipping ease: EASE on 27,278 items needs {budgets.format_bytes(budgets.need_bytes('ease', ML20M))}, "
            "3.0 GiB available (the job's memory limit; a fit may use 85% of it)") in text
    assert "skipping itemknn: ItemKNN on 27,278 items needs" in text
    assert "training als, pop" in text


# ------------------------------------------------------------------ what is available


def test_cgroup_limits_are_read_less_usage_and_reclaimable_cache(tmp_path):
    root = tmp_path / "cgroup"
    (root / "jobs" / "train").mkdir(parents=True)
    (root / "jobs" / "train" / "memory.max").write_text(f"{2 * GIB}\n")
    (root / "jobs" / "train" / "memory.current").write_text(f"{GIB}\n")
    (root / "jobs" / "train" / "memory.stat").write_text(f"anon 5\ninactive_file {GIB // 4}\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("0::/jobs/train\n")
    got = budgets.SystemMemory(root, proc).cgroup()
    assert got is not None and got.bytes == 2 * GIB - (GIB - GIB // 4) and got.job_limit
    assert "memory.max" in got.limited_by
    (root / "jobs" / "train" / "memory.max").write_text("max\n")
    assert budgets.SystemMemory(root, proc).cgroup() is None
    (root / "memory").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{GIB}\n")
    (root / "memory" / "memory.usage_in_bytes").write_text(f"{GIB // 2}\n")
    proc.write_text("4:memory:/elsewhere\n")  # v1, our own directory not mounted: the root's limit
    assert budgets.SystemMemory(root, proc).cgroup().bytes == GIB // 2
    assert budgets.SystemMemory(root, tmp_path / "missing").cgroup() is None


PROBE = textwrap.dedent("""
    import json

    import numpy as np
    import scipy.sparse as sp

    def main(argv):
        import psutil
        from recsys.interactions import IdMap
        from recsys.memory_budgets import SystemMemory
        from recsys.models.ease import EASE

        available = SystemMemory().available()
        print(json.dumps({"bytes": available.bytes, "job_limit": available.job_limit,
                          "limited_by": available.limited_by, "free": psutil.virtual_memory().available,
                          "held": psutil.Process().memory_info().data}), flush=True)
        if argv and argv[0] == "fit":
            n = int(argv[1])
            matrix = sp.random(50, n, density=0.05, format="csr", dtype=np.float32, random_state=0)
            matrix.data[:] = 1.0
            EASE().fit(matrix, IdMap(np.arange(50)), IdMap(np.arange(n)))
            print("fitted")
""")


def _run_job(tmp_path: Path, memory_bytes: int, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(APP_DIR), os.environ.get("PYTHONPATH")])))
    env.pop("LICHEN_JOB", None)
    return subprocess.run([sys.executable, "-m", "lichen.runtime.job_process", "--memory-bytes", str(memory_bytes),
                           "probe:main", "--", *args], check=False, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_job_under_lichen_run_sees_its_resources_memory_and_is_refused_within_it(tmp_path):
    limit = 3 * GIB
    probe = _run_job(tmp_path, limit)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.splitlines()[0])
    assert 0 < seen["bytes"] <= limit - seen["held"] + 16 * 1024**2
    if seen["free"] > limit:  # the job's limit, not the machine, is what binds
        assert seen["job_limit"] and "resources.memory" in seen["limited_by"]
    # A limit just above what the job holds: EASE on 6,000 items (137 MiB of Gram) is refused, not killed.
    n = 6000
    tight = seen["held"] + fit_peak_bytes("ease", n, 50, 15_000) // 2
    refused = _run_job(tmp_path, tight, "fit", str(n))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "fitted" not in refused.stdout
    assert "EASE on 6,000 items (50 users" in refused.stderr
    assert "give the job more memory (resources.memory in lichen.yaml)" in refused.stderr
    assert "Traceback" not in refused.stderr and "MemoryError" not in refused.stderr


def test_an_ingest_that_runs_out_of_memory_ends_with_one_clear_line(tmp_path):
    from recsys.synthesizing import synthesize_at_scale, write_ratings_csv

    held = json.loads(_run_job(tmp_path, 3 * GIB).stdout.splitlines()[0])["held"]
    write_ratings_csv(synthesize_at_scale(20_000, 5_000, 600_000, seed=1), tmp_path / "ratings.csv")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(APP_DIR), os.environ.get("PYTHONPATH")])))
    env.pop("LICHEN_JOB", None)
    # the rows need about 60 MiB; the job may hold what it holds at start and 24 MiB more
    done = subprocess.run([sys.executable, "-m", "lichen.runtime.job_process", "--memory-bytes",
                           str(held + 24 * 2**20), "recsys.jobs:ingest", "--", "--data", "ratings.csv",
                           "--no-events"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ran out of memory" in done.stderr and "resources.memory in lichen.yaml" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / ".lichen" / "datasets" / "LATEST").exists()


# ------------------------------------------------------------------ the fits themselves


def _previous_ease(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE as it was before the in-place fit (a sparse Gram, np.triu copies, a weights copy)."""
    n = matrix.shape[1]
    gram = (matrix.T @ matrix).toarray().astype(np.float32)
    gram[np.diag_indices(n)] += l2
    factor, _ = scipy.linalg.lapack.spotrf(gram, lower=False, overwrite_a=True)
    inverse, _ = scipy.linalg.lapack.spotri(factor, lower=False, overwrite_c=True)
    inverse = np.triu(inverse) + np.triu(inverse, 1).T
    weights = inverse / (-np.diag(inverse))
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def _previous_itemknn(matrix: sp.csr_matrix, shrink: float, k: int) -> sp.csr_matrix:
    co = (matrix.T @ matrix).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(co)).astype(np.float32)
    sim = co / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    rows = np.argpartition(-sim, k - 1, axis=0)[:k]
    cols = np.broadcast_to(np.arange(sim.shape[0]), rows.shape)
    values = sim[rows, cols]
    keep = values > 0
    return sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=sim.shape, dtype=np.float32)


@pytest.mark.parametrize("l2", [10.0, 300.0])
def test_ease_weights_are_unchanged(small_data, l2):
    matrix, users, items = _matrix(small_data)
    weights = EASE(l2=l2).fit(matrix, users, items).weights
    assert weights.dtype == np.float32 and weights.flags.c_contiguous
    np.testing.assert_allclose(weights, _previous_ease(matrix, l2), atol=1e-4, rtol=0)
    assert np.all(np.diag(weights) == 0)


@pytest.mark.parametrize(("shrink", "k"), [(0.0, 20), (10.0, 200)])
def test_itemknn_neighbours_are_unchanged(small_data, shrink, k):
    matrix, _users, _items = _matrix(small_data)
    got = keep_top_neighbours(cosine_similarity(matrix, shrink), k)
    want = _previous_itemknn(matrix, shrink, k)
    assert got.nnz == want.nnz and abs(got - want).max() == 0


def _traced_peak(fit) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fit()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("kind", "params"), [("ease", {"l2": 200.0}), ("itemknn", {"k": 200, "shrink": 10.0})])
def test_the_measured_peak_of_a_fit_is_within_the_guards_estimate(moderate, kind, params):
    matrix, users, items = moderate
    n_users, n_items = matrix.shape
    estimate = budgets.need_bytes(kind, Catalogue(n_items, n_users, matrix.nnz), params)
    with memory_source(FixedMemory(64 * GIB)):  # no psutil inside the measurement
        make_model(kind, **params).fit(matrix[:200, :100], IdMap(users.ids[:200]), IdMap(items.ids[:100]))  # warm
        peak = _traced_peak(lambda: make_model(kind, **params).fit(matrix, users, items))
    print(f"{kind} on {n_items:,} items, {matrix.nnz:,} interactions: traced peak {peak / 2**20:.1f} MiB, "
          f"estimate {estimate / 2**20:.1f} MiB ({estimate / peak:.2f}x); the n² array alone "
          f"{4 * n_items**2 / 2**20:.1f} MiB")
    assert peak >= 4 * n_items * n_items  # it did build the dense matrix, and it was traced
    assert peak <= estimate <= 2 * peak
