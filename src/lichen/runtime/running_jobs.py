"""The local job runner behind ``lichen run``.

Jobs run one at a time in ``depends_on`` order, each as its own process
(:mod:`lichen.runtime.job_process`) in the app directory, with the job's
env, secrets and resource limits. Output is streamed line by line to the
caller's :class:`JobEvents` and to a log file; each run is recorded in the
state store (:mod:`lichen.runtime.job_runs`). The first failure stops the
pipeline. Ctrl-C or SIGTERM to the runner sends SIGTERM to the job's process
group, waits ``stop_grace_s``, then kills it; the job unwinds and its
``atomic_output`` blocks remove their temporaries.

Selection works like ``make``: the named jobs run (in dependency order among
themselves); ``with_deps=True`` adds everything they depend on. With no
names every job runs.
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from lichen.clocks import Clock, SystemClock
from lichen.control.placing import Refusal, grant_gpus
from lichen.errors import ConfigError
from lichen.registry.artifacts import ARTIFACTS_ENV, read_manifest
from lichen.runtime.job_process import JOB_ENV, RUN_ID_ENV
from lichen.runtime.job_runs import (
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    STATUS_SUCCEEDED,
    STATUS_TIMEOUT,
    JobRun,
    JobRunStore,
    state_db_path,
)
from lichen.runtime.secret_stores import STORE_KEYS
from lichen.runtime.workspaces import Workspace, detect_gpus, gpu_device_list, resolve_secrets
from lichen.spec.models import AppSpec, JobSpec

REAP_POLL_S = 0.05  # how often a running job is checked for its end (and Ctrl-C, a timeout)
LOG_TAIL_LINES = 20
STOP_GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds
EXIT_TIMEOUT = 124
APP_DIR_ENV = "LICHEN_APP_DIR"


class JobEvents(Protocol):
    """What the runner reports while it works (the CLI draws progress from it)."""

    def job_started(self, run: JobRun, index: int, total: int) -> None: ...

    def job_output(self, run: JobRun, line: str) -> None: ...

    def job_progress(self, run: JobRun, done: float, total: float, label: str) -> None: ...

    def job_finished(self, run: JobRun) -> None: ...


# A job reports progress by printing this line; the runner draws it as the
# job's progress bar instead of echoing it (it still goes to the log file).
PROGRESS_LINE = re.compile(r"^::lichen-progress (\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)(?: (.*))?$")


class SilentEvents:
    def job_started(self, run: JobRun, index: int, total: int) -> None:
        pass

    def job_output(self, run: JobRun, line: str) -> None:
        pass

    def job_progress(self, run: JobRun, done: float, total: float, label: str) -> None:
        pass

    def job_finished(self, run: JobRun) -> None:
        pass


@dataclass
class PipelineResult:
    pipeline_id: str
    runs: list[JobRun] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)

    @property
    def failed(self) -> JobRun | None:
        # Only the last run can be a failure: a failed attempt that was retried is not.
        if self.runs and self.runs[-1].status != STATUS_SUCCEEDED:
            return self.runs[-1]
        return None

    @property
    def exit_code(self) -> int:
        failed = self.failed
        if failed is None:
            return 0
        return failed.exit_code if failed.exit_code not in (None, 0) else 1


# ------------------------------------------------------------------ planning


def order_jobs(jobs: dict[str, JobSpec], names: list[str], *, with_deps: bool = False) -> list[str]:
    """The jobs to run, dependencies first; ties keep the spec's order."""
    for name in names:
        if name not in jobs:
            close = difflib.get_close_matches(name, list(jobs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; jobs: {', '.join(jobs) or 'none'}"
            raise ConfigError(f"no job named {name!r} in the spec{hint}")
    selected = set(names) if names else set(jobs)
    if with_deps:
        stack = list(selected)
        while stack:
            for dep in jobs[stack.pop()].depends_on:
                if dep in jobs and dep not in selected:
                    selected.add(dep)
                    stack.append(dep)
    position = {name: i for i, name in enumerate(jobs)}
    # Order by transitive dependencies, so a named job still follows a named
    # job it depends on through one that was not selected.
    pending = {n: _ancestors(jobs, n) & selected for n in selected}
    ordered: list[str] = []
    while pending:
        ready = sorted((n for n, deps in pending.items() if not deps), key=position.__getitem__)
        if not ready:
            raise ConfigError(f"jobs depend on each other in a cycle: {', '.join(sorted(pending))}")
        first = ready[0]
        ordered.append(first)
        del pending[first]
        for deps in pending.values():
            deps.discard(first)
    return ordered


def _ancestors(jobs: dict[str, JobSpec], name: str) -> set[str]:
    seen: set[str] = set()
    stack = [d for d in jobs[name].depends_on if d in jobs]
    while stack:
        dep = stack.pop()
        if dep not in seen and dep != name:
            seen.add(dep)
            stack.extend(d for d in jobs[dep].depends_on if d in jobs)
    return seen


# ------------------------------------------------------------------ running


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While running, SIGTERM to the runner unwinds like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class JobRunner:
    """Runs a spec's jobs as subprocesses and records each run."""

    def __init__(
        self,
        spec: AppSpec,
        app_dir: str | os.PathLike[str],
        *,
        events: JobEvents | None = None,
        stop_grace_s: float = STOP_GRACE_S,
        clock: Clock | None = None,
    ) -> None:
        self.spec = spec
        self.app_dir = Path(app_dir).absolute()
        self._secret_names = spec.secret_names()
        self.events: JobEvents = events or SilentEvents()
        self.stop_grace_s = stop_grace_s
        self.clock: Clock = clock or SystemClock()
        """wall time for run records, monotonic time for timeouts (a twin in tests)"""
        self.store = JobRunStore(state_db_path(spec.state.url, self.app_dir))
        self.runs_dir = self.app_dir / ".lichen" / "runs"
        self.cancelled = threading.Event()
        """set from another thread (a replaced or shut-down scheduled run): the job is stopped as on Ctrl-C"""

    def plan(self, names: list[str], *, with_deps: bool = False) -> list[str]:
        return order_jobs(dict(self.spec.jobs), names, with_deps=with_deps)

    def run(
        self,
        names: list[str],
        params: list[str] | None = None,
        *,
        with_deps: bool = False,
        source_params: list[str] | None = None,
        pipeline_id: str | None = None,
    ) -> PipelineResult:
        """Run the selected jobs; stops at the first that does not succeed.

        ``params`` go to every job that runs; ``source_params`` (the pipeline's
        input, such as ``--data PATH``) only to the jobs that start it: those
        that depend on no other job being run.
        """
        order = self.plan(names, with_deps=with_deps)
        sources = {n for n in order if not (_ancestors(dict(self.spec.jobs), n) & set(order))}
        # Resolve every job's secrets and GPUs before starting any, so a missing one fails fast.
        machine_gpus = detect_gpus()
        granted: dict[str, tuple[int, ...]] = {}
        for name in order:
            self._secrets(name, self.spec.jobs[name])
            gpus = grant_gpus(self.spec.jobs[name].resources.gpu, machine_gpus)
            if isinstance(gpus, Refusal):
                raise ConfigError(f"{gpus} (NVIDIA device nodes /dev/nvidia*, or CUDA_VISIBLE_DEVICES); "
                                  "lower it or run where there are more", where=f"jobs.{name}.resources.gpu")
            granted[name] = gpus
        result = PipelineResult(pipeline_id=pipeline_id or uuid.uuid4().hex[:12], planned=order)
        with _sigterm_as_interrupt():
            for index, name in enumerate(order):
                if self.cancelled.is_set():  # stopped before this job began: nothing of it runs
                    break
                job = self.spec.jobs[name]
                for attempt in range(1, job.retries + 2):
                    if attempt > 1 and self.cancelled.is_set():
                        break
                    job_params = [*(source_params or [] if name in sources else []), *(params or [])]
                    run = self._run_one(name, job, job_params, attempt, result.pipeline_id, index, len(order),
                                        granted[name])
                    result.runs.append(run)
                    if run.status != STATUS_FAILED:
                        break
                if run.status != STATUS_SUCCEEDED:
                    break
        return result

    def _environment(self, name: str, job: JobSpec, run_id: str, manifest: Path) -> tuple[dict[str, str], list[str]]:
        # Only the secrets this job declares reach it, as in a Kubernetes pod: every other
        # secret the app names is kept out of what it inherits from this process.
        secrets = self._secrets(name, job)
        # ... and never the store's key, which would open every secret
        env = {k: v for k, v in os.environ.items() if k not in self._secret_names and k not in STORE_KEYS}
        env.update(job.env)
        env.update(secrets)
        python_path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(self.app_dir) + (os.pathsep + python_path if python_path else "")
        env["PYTHONUNBUFFERED"] = "1"
        env[RUN_ID_ENV] = run_id
        env[ARTIFACTS_ENV] = str(manifest)
        env[APP_DIR_ENV] = str(self.app_dir)
        env[JOB_ENV] = name
        return env, [v for v in secrets.values() if len(v) >= 4]

    def _secrets(self, name: str, job: JobSpec) -> dict[str, str]:
        """The job's secrets: the runner's environment, the encrypted store, then ``.lichen/secrets.env``."""
        workspace = Workspace(self.app_dir)
        return resolve_secrets(job.secrets, os.environ, f"jobs.{name}.secrets", store=workspace.secret_store(),
                               legacy_file=workspace.secrets_file)

    def _command(self, job: JobSpec, argv: list[str]) -> list[str]:
        cmd = [sys.executable, "-m", "lichen.runtime.job_process", "--parent-pid", str(os.getpid())]
        if job.resources.memory:
            cmd += ["--memory-bytes", str(int(job.resources.memory))]
        if job.resources.cpu:
            cmd += ["--cpu-cores", str(float(job.resources.cpu))]
        return [*cmd, job.entrypoint, "--", *argv]

    def _run_one(
        self, name: str, job: JobSpec, params: list[str], attempt: int, pipeline_id: str, index: int, total: int,
        gpus: tuple[int, ...],
    ) -> JobRun:
        run_id = uuid.uuid4().hex[:12]
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.runs_dir / f"{run_id}-{name}.log"
        manifest = self.runs_dir / f"{run_id}.artifacts"
        argv = [*job.args, *params]
        env, masked = self._environment(name, job, run_id, manifest)
        run = JobRun(
            run_id=run_id,
            pipeline_id=pipeline_id,
            job=name,
            started_at=self.clock.wall(),
            argv=argv,
            attempt=attempt,
            log_path=str(log_path),
            runner_pid=os.getpid(),
        )
        self.store.start(run)
        self.events.job_started(run, index, total)
        # exactly the GPUs granted in run(), none for gpu 0 (as a replica under `lichen up`, or a Kubernetes pod)
        env["CUDA_VISIBLE_DEVICES"] = gpu_device_list(gpus)
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with log_path.open("w", encoding="utf-8") as log:
            try:
                proc = subprocess.Popen(
                    self._command(job, argv),
                    cwd=self.app_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                run.status, run.exit_code, run.ended_at = STATUS_FAILED, 127, self.clock.wall()
                run.log_tail = f"could not start job: {exc}"
                self.store.finish(run)
                self.events.job_finished(run)
                return run
            assert proc.stdout is not None
            reader = threading.Thread(
                target=self._pump, args=(proc.stdout, run, log, tail, masked), name=f"job-{name}-log", daemon=True
            )
            reader.start()
            status = self._wait(proc, job.timeout_s, run)
            reader.join(timeout=10)
        code = proc.returncode
        run.exit_code = 128 - code if code is not None and code < 0 else code
        if status == STATUS_RUNNING:
            status = STATUS_SUCCEEDED if run.exit_code == 0 else STATUS_FAILED
        elif status == STATUS_TIMEOUT:
            run.exit_code = EXIT_TIMEOUT
        run.status = status
        run.ended_at = self.clock.wall()
        run.log_tail = "\n".join(tail)
        run.artifacts = self._artifacts(job, manifest, succeeded=status == STATUS_SUCCEEDED)
        self.store.finish(run)
        self.events.job_finished(run)
        return run

    def _pump(
        self, stream: IO[bytes], run: JobRun, log: IO[str], tail: collections.deque[str], masked: list[str]
    ) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            for secret in masked:
                line = line.replace(secret, "***")
            log.write(line + "\n")
            log.flush()
            progress = PROGRESS_LINE.match(line)
            if progress is not None:
                done, total, label = progress.groups()
                self.events.job_progress(run, float(done), float(total), label or "")
                continue
            tail.append(line)
            self.events.job_output(run, line)
        stream.close()

    def _wait(self, proc: subprocess.Popen[bytes], timeout_s: float | None, run: JobRun) -> str:
        """Wait for the job; on Ctrl-C/SIGTERM or timeout stop it gracefully."""
        deadline = None if timeout_s is None else self.clock.now() + timeout_s
        try:
            while True:
                if _reap(proc, run, block=False):
                    return STATUS_RUNNING
                if deadline is not None and self.clock.now() >= deadline:
                    self._stop(proc, run)
                    return STATUS_TIMEOUT
                if self.cancelled.wait(REAP_POLL_S):
                    self._stop(proc, run)
                    return STATUS_INTERRUPTED
        except KeyboardInterrupt:
            self._stop(proc, run)
            return STATUS_INTERRUPTED

    def _stop(self, proc: subprocess.Popen[bytes], run: JobRun) -> None:
        """SIGTERM the job's process group, then SIGKILL after the grace period."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        try:
            while not _reap(proc, run, block=False) and time.monotonic() < deadline:
                time.sleep(REAP_POLL_S)
        except KeyboardInterrupt:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _reap(proc, run, block=True)

    def _artifacts(self, job: JobSpec, manifest: Path, *, succeeded: bool) -> list[str]:
        paths = read_manifest(manifest)
        if succeeded:
            for output in job.outputs:
                candidate = (self.app_dir / output).absolute()
                if candidate.exists() and str(candidate) not in paths:
                    paths.append(str(candidate))
        with contextlib.suppress(OSError):
            manifest.unlink()
        return paths


def _reap(proc: subprocess.Popen[bytes], run: JobRun, *, block: bool) -> bool:
    """Whether the job's process has ended, reaping it with ``wait4`` to keep its resource usage: the
    peak RSS of the job's largest process, itself or any it started and waited for (``run.max_rss_bytes``)."""
    if proc.returncode is not None:
        return True
    try:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: the exit code is all that is left
        proc.wait()
        return True
    if pid == 0:
        return False
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.max_rss_bytes = int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)  # bytes there, KiB on Linux
    return True
