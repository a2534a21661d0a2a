"""``lichen run`` / ``lichen runs`` against real job subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]

SPEC = """
app: pipeline
jobs:
  ingest:
    entrypoint: steps:ingest
    args: [--rows, "3"]
  features:
    entrypoint: steps:features
    depends_on: [ingest]
    env: {FEATURE_MODE: fast}
    secrets: [API_TOKEN]
  train:
    entrypoint: steps:train
    depends_on: [features]
    outputs: [model/weights.txt]
  slow:
    entrypoint: steps:slow
    resources: {memory: 256Mi, cpu: 0.5}
  flaky:
    entrypoint: steps:flaky
    retries: 1
  progress:
    entrypoint: steps:progress
  hang:
    entrypoint: steps:hang
    timeout_s: 1
  peek:
    entrypoint: steps:peek
  hungry:
    entrypoint: steps:hungry
  gpus:
    entrypoint: steps:peek
    resources: {gpu: 2}
"""

STEPS = '''
import argparse, os, sys, time
from pathlib import Path
from lichen import atomic_output

def _args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--data")
    parser.add_argument("--fail", type=int, default=0)
    return parser.parse_known_args(argv)[0]

def ingest(argv):
    args = _args(argv)
    print("ingest argv", argv, flush=True)
    with atomic_output("data/rows.txt") as tmp:
        tmp.write_text("\\n".join(str(i) for i in range(args.rows)) + "\\n")
    if args.data:
        with atomic_output("data/source.txt") as tmp:
            tmp.write_text(args.data)

def features(argv):
    rows = Path("data/rows.txt").read_text().split()
    print("features argv", argv, flush=True)
    print("features mode", os.environ["FEATURE_MODE"], "token", os.environ["API_TOKEN"], flush=True)
    print("run", os.environ["LICHEN_RUN_ID"], flush=True)
    with atomic_output("data/features", directory=True) as tmp:
        (tmp / "count.txt").write_text(str(len(rows)))
    if _args(argv).fail:
        print("features failed on purpose", file=sys.stderr, flush=True)
        return _args(argv).fail

def train(argv):
    Path("model").mkdir(exist_ok=True)
    Path("model/weights.txt").write_text("w")
    print("trained", flush=True)

def slow(argv):
    print("affinity", len(os.sched_getaffinity(0)), flush=True)
    try:
        bytearray(1024 * 1024 * 1024)
        print("allocated 1GiB", flush=True)
    except MemoryError:
        print("memory limited", flush=True)
    with atomic_output("big/model", directory=True) as tmp:
        (tmp / "part1").write_text("half")
        Path("started").write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)

def flaky(argv):
    marker = Path("flaky-tried")
    if not marker.exists():
        marker.touch()
        return 5
    print("second attempt ok", flush=True)

def progress(argv):
    for i in range(3):
        print(f"::lichen-progress {i + 1}/3 step {i + 1}", flush=True)
    print("done", flush=True)

def hang(argv):
    while True:
        time.sleep(0.05)

def peek(argv):
    print("peek sees API_TOKEN:", os.environ.get("API_TOKEN", "<unset>"), flush=True)
    print("peek sees GPUs:", repr(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")), flush=True)

def hungry(argv):
    child = os.fork()
    if child == 0:  # a worker that touches 300 MiB and ends; the job itself stays small
        block = b"x" * (300 * 1024 * 1024)
        os._exit(0 if block[-1:] == b"x" else 1)
    _, status = os.waitpid(child, 0)
    print("worker exit", os.waitstatus_to_exitcode(status), flush=True)
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "lichen.yaml").write_text(SPEC)
    (tmp_path / "steps.py").write_text(textwrap.dedent(STEPS))
    (tmp_path / ".lichen").mkdir()
    (tmp_path / ".lichen" / "secrets.env").write_text("API_TOKEN=s3cr3t-value\n")
    return tmp_path


def lichen(app: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
    env["COLUMNS"] = "200"
    return subprocess.run([*LICHEN, *args], cwd=app, env=env, capture_output=True, text=True, timeout=timeout)


def runs(app: Path, *args: str) -> list[dict]:
    result = lichen(app, "runs", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_pipeline_runs_in_order_with_params_env_secrets_and_history(app: Path) -> None:
    result = lichen(app, "run", "train", "--with-deps", "--data", "/some/where", "--", "--rows", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("[ingest] ingest argv") < out.index("[features] features mode") < out.index("[train] trained")
    # --data is the pipeline's input: only the job that starts it gets it; '--' params go to all.
    assert "ingest argv ['--rows', '3', '--data', '/some/where', '--rows', '5']" in out
    assert "features argv ['--rows', '5']" in out
    assert "features mode fast token ***" in out and "s3cr3t-value" not in out
    assert (app / "data" / "rows.txt").read_text().split() == ["0", "1", "2", "3", "4"]
    assert (app / "data" / "source.txt").read_text() == "/some/where"
    history = runs(app)
    assert [r["job"] for r in history] == ["train", "features", "ingest"]
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in history)
    assert len({r["pipeline_id"] for r in history}) == 1
    by_job = {r["job"]: r for r in history}
    assert by_job["ingest"]["artifacts"] == [str(app / "data" / "rows.txt"), str(app / "data" / "source.txt")]
    assert by_job["features"]["artifacts"] == [str(app / "data" / "features")]
    assert by_job["train"]["artifacts"] == [str(app / "model" / "weights.txt")]
    assert f"run {by_job['features']['run_id']}" in Path(by_job["features"]["log_path"]).read_text()
    assert "s3cr3t-value" not in Path(by_job["features"]["log_path"]).read_text()
    assert [r["job"] for r in runs(app, "--job", "ingest")] == ["ingest"]
    table = lichen(app, "runs")
    assert table.returncode == 0 and "succeeded" in table.stdout and "features" in table.stdout


def test_failure_stops_the_pipeline_with_exit_code_and_log_tail(app: Path) -> None:
    result = lichen(app, "run", "ingest", "features", "train", "--", "--fail", "7")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "features failed on purpose" in result.stderr  # the log tail
    assert "job features failed with exit code 7" in result.stderr
    assert "not run: train" in result.stderr
    assert "[train]" not in result.stdout
    history = runs(app)
    assert [(r["job"], r["status"], r["exit_code"]) for r in history] == [
        ("features", "failed", 7),
        ("ingest", "succeeded", 0),
    ]
    # The failed job's committed outputs are still listed; nothing else is.
    assert history[0]["artifacts"] == [str(app / "data" / "features")]


def test_missing_secret_fails_before_any_job_starts(app: Path) -> None:
    (app / ".lichen" / "secrets.env").unlink()
    result = lichen(app, "run")
    assert result.returncode == 2
    assert "jobs.features.secrets: API_TOKEN not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert runs(app) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 143)])
def test_interrupt_leaves_no_partial_artifacts(app: Path, sig: signal.Signals, code: int) -> None:
    proc = subprocess.Popen([*LICHEN, "run", "slow"], cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not (app / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "job never got mid-write"
            time.sleep(0.05)
        assert any(p.name.endswith(".lichen-tmp") for p in (app / "big").iterdir())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, out + err
    assert list((app / "big").iterdir()) == [], "the partial model directory must be gone"
    assert "affinity 1" in out
    assert "memory limited" in out
    [record] = runs(app)
    assert record["status"] == "interrupted" and record["exit_code"] == code
    assert record["artifacts"] == []
    assert "partial outputs were discarded" in record["log_tail"]
    [line] = [json.loads(text) for text in record["log_tail"].splitlines() if '"event":"job_terminated"' in text]
    assert (line["level"], line["logger"], line["job"], line["run_id"]) == ("warning", "lichen.job", "slow", record["run_id"])


def test_retries_and_timeouts(app: Path) -> None:
    result = lichen(app, "run", "flaky")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(r["attempt"], r["status"]) for r in runs(app, "--job", "flaky")] == [(2, "succeeded"), (1, "failed")]
    result = lichen(app, "run", "hang")
    assert result.returncode == 124
    assert runs(app, "--job", "hang")[0]["status"] == "timeout"


def test_killed_runner_takes_its_job_down_and_the_run_shows_lost(app: Path) -> None:
    runner = subprocess.Popen([*LICHEN, "run", "slow"], cwd=app, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (app / "started").exists() or not (app / "started").read_text():
            assert runner.poll() is None
            assert time.monotonic() < deadline, "job never got mid-write"
            time.sleep(0.05)
        job_pid = int((app / "started").read_text())
        runner.kill()  # SIGKILL: the runner cannot forward anything
        runner.wait(timeout=30)
        while True:
            try:
                os.kill(job_pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline + 60, "the job outlived its runner"
            time.sleep(0.05)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert list((app / "big").iterdir()) == [], "the job unwound and removed its partial output"
    [record] = runs(app)
    assert record["status"] == "lost" and record["exit_code"] is None


def test_progress_lines_drive_the_job_bar_and_stay_out_of_the_stream(app: Path) -> None:
    from lichen.runtime.running_jobs import JobRunner
    from lichen.spec.loading import load_spec

    seen: list[tuple[str, float, float, str]] = []
    output: list[str] = []

    class Recorder:
        def job_started(self, run, index, total):
            pass

        def job_output(self, run, line):
            output.append(line)

        def job_progress(self, run, done, total, label):
            seen.append((run.job, done, total, label))

        def job_finished(self, run):
            pass

    result = JobRunner(load_spec(app / "lichen.yaml"), app, events=Recorder()).run(["progress"])
    assert result.exit_code == 0
    assert seen == [("progress", 1.0, 3.0, "step 1"), ("progress", 2.0, 3.0, "step 2"),
                    ("progress", 3.0, 3.0, "step 3")]
    assert output == ["done"]
    assert "::lichen-progress 3/3" in Path(result.runs[0].log_path).read_text()
    shown = lichen(app, "run", "progress")
    assert shown.returncode == 0 and "::lichen-progress" not in shown.stdout and "3/3" in shown.stdout


def test_a_job_sees_only_the_secrets_it_declares(app: Path) -> None:
    env = {**os.environ, "API_TOKEN": "exported-in-the-shell", "COLUMNS": "200"}
    result = subprocess.run([*LICHEN, "run", "peek"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peek sees API_TOKEN: <unset>" in result.stdout
    assert "exported-in-the-shell" not in result.stdout + result.stderr


def test_each_run_records_the_peak_memory_of_its_largest_process(app: Path) -> None:
    result = lichen(app, "run", "hungry", "peek")  # one runner: each run's figure is its own
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker exit 0" in result.stdout
    hungry, = runs(app, "--job", "hungry")
    peek, = runs(app, "--job", "peek")
    assert hungry["max_rss_bytes"] >= 300 * 2**20  # the worker it forked and waited for counts
    assert 0 < peek["max_rss_bytes"] < 200 * 2**20  # not the hungry run's figure carried over
    table = lichen(app, "runs").stdout
    assert "peak memory" in table and "MiB" in table


def test_a_job_sees_exactly_the_gpus_it_asks_for_and_too_many_fail_before_anything_runs(app: Path) -> None:
    def run_with(visible: str, *jobs: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "COLUMNS": "200"}
        return subprocess.run([*LICHEN, "run", *jobs], cwd=app, env=env, capture_output=True, text=True, timeout=120)

    # a machine whose visible GPUs are 3, 5 and 6: the job asking for two gets the first two, one asking for
    # none gets none (CUDA reads an empty list as no device), as a replica under lichen up
    result = run_with("3,5,6", "gpus", "peek")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peek sees GPUs: '3,5'" in result.stdout and "peek sees GPUs: ''" in result.stdout
    uuids = run_with("GPU-aaa,GPU-bbb", "gpus")  # named by UUID: the names pass through
    assert uuids.returncode == 0 and "peek sees GPUs: 'GPU-aaa,GPU-bbb'" in uuids.stdout, uuids.stdout
    before = len(runs(app))
    refused = run_with("7", "peek", "gpus")  # one GPU: refused before peek, the job before it, starts
    assert refused.returncode == 2
    assert "jobs.gpus.resources.gpu: gpu 2 is more than this machine has (1 GPUs)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(runs(app)) == before
