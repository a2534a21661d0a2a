"""The pipeline end to end on small synthetic data, and atomicity: a job
killed mid-write leaves nothing half-written in the dataset store or the
model registry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import os

import pytest
from lichen import ModelRegistry

from recsys import datasets
from recsys.jobs import evaluate, features, ingest, train
from recsys.models import load_model

SMALL = ["--synthetic", "--users", "120", "--items", "200", "--offline"]
APP_DIR = Path(__file__).resolve().parents[3] / "examples" / "recsys"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(APP_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("REDIS_URL", None)
    return env


def test_pipeline_ingest_features_train_evaluate(app_dir, capsys):
    assert ingest([*SMALL, "--seed", "3"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert features([]) == 0
    assert train(["--models", "ease,itemknn,pop", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "promoted recommender v" in out
    registry = ModelRegistry(app_dir / ".lichen" / "models")
    versions = registry.list("recommender")
    assert [v.params["model"] for v in versions] == ["ease", "itemknn", "pop"]
    version = datasets.latest_version(app_dir / ".lichen" / "datasets")
    assert {v.dataset_version for v in versions} == {version}
    for v in versions:
        assert {"valid_ndcg@10", "test_ndcg@10", "test_recall@10", "fit_s"} <= set(v.metrics) and v.checksum
    promoted = registry.promoted("recommender")
    assert promoted.metrics["valid_ndcg@10"] == max(v.metrics["valid_ndcg@10"] for v in versions)
    model = load_model(promoted.path)
    user = model.known_users[0]
    assert len(model.recommend(model.history(user), 5)) == 5

    assert evaluate(["--models", "ease,pop", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "RecBole BPR (README)" in out and "SYNTHETIC" in out
    result = json.loads((app_dir / ".lichen" / "evaluations" / f"{version}.json").read_text())
    assert result["seeds"] == [0, 1] and len(result["runs"]) == 4
    assert result["summary"]["ease"]["ndcg"] > result["summary"]["pop"]["ndcg"]


def test_evaluate_tests_the_promoted_configuration_on_every_seed(app_dir, capsys):
    from recsys.evaluating import evaluate_kind, make_split
    from recsys.training import choose_params

    assert ingest([*SMALL, "--seed", "5"]) == 0
    assert features([]) == 0
    capsys.readouterr()
    assert evaluate(["--models", "ease,pop", "--seeds", "0,1,2", "--promoted-config", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "configuration train promotes, tested on every seed (0,1,2)" in " ".join(out.split())  # wrapped
    version = datasets.latest_version(app_dir / ".lichen" / "datasets")
    result = json.loads((app_dir / ".lichen" / "evaluations" / f"{version}.json").read_text())
    runs = [run for run in result["runs"] if run["model"] == "ease"]
    params = choose_params("ease", runs)
    assert result["promoted_config"]["ease"]["params"] == params
    data, _ = datasets.load_dataset(app_dir / ".lichen" / "datasets")
    expected = [evaluate_kind("ease", make_split(data, seed), grid=[params])["test"]["ndcg"] for seed in (0, 1, 2)]
    assert result["promoted_config"]["ease"]["test"]["ndcg"] == pytest.approx(sum(expected) / 3)
    assert result["promoted_config"]["pop"]["test"]["ndcg"] == pytest.approx(result["summary"]["pop"]["ndcg"])


def test_train_in_parallel_processes_ends_them_quietly_and_evaluate_reuses_its_runs(app_dir):
    assert ingest([*SMALL, "--seed", "4"]) == 0
    code = "import sys; from recsys.jobs import {0}; sys.exit({0}(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code.format("train"), "--models", "ease,pop", "--workers", "2",
                           "--seeds", "0,1"], cwd=app_dir, env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout  # the pool's processes end without a word
    assert "2 processes" in done.stdout and "mean over 2 seeds" in done.stdout
    done = subprocess.run([sys.executable, "-c", code.format("evaluate"), "--models", "ease,pop", "--seeds", "1,2"],
                          cwd=app_dir, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reused 2 of 4 runs" in done.stdout  # seed 1 was run by train; seed 2 was not


def test_job_arguments_are_validated(app_dir):
    from lichen import ConfigError, DataError

    with pytest.raises(ConfigError, match="unknown model"):
        train(["--models", "ease,bpr"])
    with pytest.raises(ConfigError, match="--seeds"):
        train(["--seeds", "0,0"])
    with pytest.raises(ConfigError, match="--on-bad-rows"):
        ingest(["--on-bad-rows", "maybe"])
    with pytest.raises(DataError, match="run the ingest job first"):
        features([])


# ------------------------------------------------------------------ atomicity

# Each child does the real job, but blocks inside the write we want to
# interrupt, after signalling the test through a marker file.
INGEST_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
real_savez = np.savez
def blocking_savez(file, **arrays):
    real_savez(file, **arrays)
    Path(sys.argv[1]).write_text("writing")
    time.sleep(600)
np.savez = blocking_savez
from recsys.jobs import ingest
ingest(sys.argv[2:])
"""

TRAIN_CHILD = """
import shutil, sys, time
from pathlib import Path
real_copytree = shutil.copytree
def blocking_copytree(src, dst, *args, **kwargs):
    out = real_copytree(src, dst, *args, **kwargs)
    Path(sys.argv[1]).write_text("writing")
    time.sleep(600)
    return out
shutil.copytree = blocking_copytree
from recsys.jobs import train
train(sys.argv[2:])
"""


def _run_and_kill(app_dir: Path, script: str, args: list[str], signum: int) -> int:
    marker = app_dir / "marker"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker), *args], cwd=app_dir, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited early ({proc.returncode}): {proc.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child never reached the write")
        time.sleep(0.02)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    proc.stdout.close()
    return proc.returncode


def _visible(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")} if directory.exists() else set()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_ingest_killed_mid_write_leaves_the_store_as_it_was(app_dir, signum):
    store = app_dir / ".lichen" / "datasets"
    ingest([*SMALL, "--seed", "1"])
    before = datasets.latest_version(store)
    code = _run_and_kill(app_dir, INGEST_CHILD, [*SMALL, "--seed", "2"], signum)
    assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signal.SIGTERM)
    assert _visible(store) == {before, datasets.LATEST}
    assert datasets.latest_version(store) == before
    datasets.load_dataset(store)  # checksums still verify
    if signum == signal.SIGTERM:  # a clean interruption also removes its temporaries
        assert {p.name for p in store.iterdir()} == {before, datasets.LATEST}
    ingest([*SMALL, "--seed", "2"])  # and the next run writes the new version whole
    assert datasets.latest_version(store) != before
    datasets.load_dataset(store)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_train_killed_mid_register_leaves_the_registry_as_it_was(app_dir, signum):
    ingest([*SMALL, "--seed", "1"])
    train(["--models", "pop"])
    root = app_dir / ".lichen" / "models"
    registry = ModelRegistry(root)
    assert [v.version for v in registry.list("recommender")] == [1]
    files_before = _visible(root / "recommender")
    _run_and_kill(app_dir, TRAIN_CHILD, ["--models", "ease", "--threads", "1"], signum)
    assert [v.version for v in registry.list("recommender")] == [1]
    assert registry.promoted("recommender").version == 1
    assert _visible(root / "recommender") == files_before
    train(["--models", "ease"])
    assert [v.version for v in registry.list("recommender")] == [1, 2]
    assert load_model(registry.get("recommender", 2).path).kind == "ease"


def test_default_models_skip_dense_item_models_that_do_not_fit_in_memory():
    from rich.console import Console

    from recsys.jobs import _default_models
    from recsys.memory_budgets import GIB, FixedMemory, memory_source

    console = Console(record=True, width=200)
    ml100k = {"items": 1682, "users": 943, "rows": 100_000}
    large = {"items": 62_000, "users": 162_000, "rows": 25_000_000}
    with memory_source(FixedMemory(4 * GIB)):  # the guard's own tests are in test_recsys_memory.py
        assert _default_models(None, ml100k, console) == ["kernel", "ease", "als", "itemknn", "pop"]
        assert "skipping" not in console.export_text()
        assert _default_models(None, large, console) == ["als", "pop"]
        shown = console.export_text()
        assert "skipping ease: EASE on 62,000 items needs" in shown
        assert "skipping kernel: its fit eigendecomposes a 162,000 × 162,000 kernel" in shown
        # the kernel's cubic cost, not its memory, keeps it out of a default run past 8,000 users or items,
        # or past ML-1M's users × items × (users + items)
        wide = {"items": 9_000, "users": 600, "rows": 100_000}
        assert _default_models(None, wide, console) == ["ease", "als", "itemknn", "pop"]
        assert _default_models(["kernel"], wide, console) == ["kernel"]
        ml1m = {"items": 3_706, "users": 6_040, "rows": 1_000_209}
        assert _default_models(None, ml1m, console)[0] == "kernel"
        square = {"items": 7_000, "users": 7_000, "rows": 1_000_000}
        assert "kernel" not in _default_models(None, square, console)
        assert "each grid point costs two products of 6.9e+11 multiply-adds" in console.export_text()
        assert _default_models(["ease"], large, console) == ["ease"]  # asked for: EASE says why it can't


def test_parallel_train_and_evaluate_give_what_one_process_gives(app_dir, capsys, monkeypatch):
    assert ingest([*SMALL, "--seed", "5"]) == 0
    assert features([]) == 0
    registry = ModelRegistry(app_dir / ".lichen" / "models")
    version = datasets.latest_version(app_dir / ".lichen" / "datasets")
    runs = {}
    for workers in ("1", "2"):
        assert train(["--models", "ease,itemknn,pop", "--workers", workers, "--no-promote"]) == 0
        assert evaluate(["--models", "ease,itemknn,pop", "--seeds", "0,1,2", "--workers", workers]) == 0
        runs[workers] = json.loads((app_dir / ".lichen" / "evaluations" / f"{version}.json").read_text())
    assert [r["test"] for r in runs["1"]["runs"]] == [r["test"] for r in runs["2"]["runs"]]
    assert [(r["seed"], r["model"]) for r in runs["2"]["runs"]] == [(s, m) for s in (0, 1, 2)
                                                                    for m in ("ease", "itemknn", "pop")]
    versions = registry.list("recommender")
    # registered in --models order whichever process finished first, with the same metrics
    assert [v.params["model"] for v in versions] == ["ease", "itemknn", "pop"] * 2
    strip = [{k: x for k, x in v.metrics.items() if k != "fit_s"} for v in versions]
    assert strip[:3] == strip[3:]
    from lichen import DataError

    monkeypatch.setenv("RECSYS_WORKERS", "0")
    with pytest.raises(DataError, match="RECSYS_WORKERS"):
        evaluate(["--models", "pop"])
    capsys.readouterr()
