"""The history of job runs: one ``job_runs`` table in the app's state store.

The state store is the SQLite file named by ``state.url`` in ``lichen.yaml``
(other Lichen components keep their own tables in the same file). Every
write is one short transaction; the connection uses WAL and a generous
busy timeout so ``lichen runs`` can read while a pipeline writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lichen.errors import StateError

BUSY_TIMEOUT_MS = 30_000

STATUS_RUNNING = "running"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
STATUS_TIMEOUT = "timeout"
STATUS_LOST = "lost"  # still "running" but the process that ran it is gone

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_runs (
    run_id TEXT PRIMARY KEY,
    pipeline_id TEXT NOT NULL,
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    argv TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    artifacts TEXT NOT NULL DEFAULT '[]',
    log_path TEXT,
    log_tail TEXT,
    runner_pid INTEGER,
    max_rss_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job, started_at);
CREATE INDEX IF NOT EXISTS job_runs_by_start ON job_runs (started_at);
CREATE TABLE IF NOT EXISTS cron_schedules (
    job TEXT PRIMARY KEY,
    last_scheduled_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cron_plans (
    job TEXT NOT NULL,
    scheduled_s REAL NOT NULL,
    start_s REAL NOT NULL,
    PRIMARY KEY (job, scheduled_s)
);
"""


@dataclass
class JobRun:
    """One execution of one job."""

    run_id: str
    pipeline_id: str
    job: str
    started_at: float
    argv: list[str] = field(default_factory=list)
    attempt: int = 1
    ended_at: float | None = None
    status: str = STATUS_RUNNING
    exit_code: int | None = None
    artifacts: list[str] = field(default_factory=list)
    log_path: str | None = None
    log_tail: str | None = None
    runner_pid: int | None = None
    max_rss_bytes: int | None = None
    """peak resident memory of the job's largest process (itself, or any process it started and waited for)"""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = self.duration_s
        return data


def state_db_path(state_url: str, app_dir: str | os.PathLike[str]) -> Path:
    """``sqlite:///.lichen/state.db`` relative to the app dir; ``sqlite:////abs`` absolute."""
    from lichen.runtime.state import sqlite_path  # the control plane's tables share this file

    return sqlite_path(state_url, Path(app_dir)).absolute()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobRunStore:
    """Reads and writes the ``job_runs`` table."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._ready = False

    @contextlib.contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.exists():
            raise FileNotFoundError(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(job_runs)")}
                if "max_rss_bytes" not in columns:  # a state store written before the column existed
                    with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                        conn.execute("ALTER TABLE job_runs ADD COLUMN max_rss_bytes INTEGER")
                self._ready = True
            yield conn
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc
        finally:
            conn.close()

    def start(self, run: JobRun) -> None:
        with self._connect(create=True) as conn:
            conn.execute(
                "INSERT INTO job_runs (run_id, pipeline_id, job, attempt, argv, started_at, status, log_path, "
                "runner_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.pipeline_id,
                    run.job,
                    run.attempt,
                    json.dumps(run.argv),
                    run.started_at,
                    run.status,
                    run.log_path,
                    run.runner_pid,
                ),
            )

    def finish(self, run: JobRun) -> None:
        with self._connect(create=True) as conn:
            conn.execute(
                "UPDATE job_runs SET ended_at=?, status=?, exit_code=?, artifacts=?, log_tail=?, max_rss_bytes=? "
                "WHERE run_id=?",
                (run.ended_at, run.status, run.exit_code, json.dumps(run.artifacts), run.log_tail, run.max_rss_bytes,
                 run.run_id),
            )

    def list(self, job: str | None = None, limit: int | None = None) -> list[JobRun]:
        """Runs newest first; a run whose runner died mid-run shows as ``lost``."""
        try:
            with self._connect(create=False) as conn:
                query = (
                    "SELECT run_id, pipeline_id, job, attempt, argv, started_at, ended_at, status, exit_code, "
                    "artifacts, log_path, log_tail, runner_pid, max_rss_bytes FROM job_runs"
                )
                params: list[Any] = []
                if job is not None:
                    query += " WHERE job=?"
                    params.append(job)
                query += " ORDER BY started_at DESC, rowid DESC"
                if limit is not None:
                    query += " LIMIT ?"
                    params.append(int(limit))
                rows = conn.execute(query, params).fetchall()
        except FileNotFoundError:
            return []
        runs = []
        for r in rows:
            run = JobRun(
                run_id=r[0],
                pipeline_id=r[1],
                job=r[2],
                attempt=int(r[3]),
                argv=json.loads(r[4]),
                started_at=float(r[5]),
                ended_at=r[6],
                status=r[7],
                exit_code=r[8],
                artifacts=json.loads(r[9] or "[]"),
                log_path=r[10],
                log_tail=r[11],
                runner_pid=r[12],
                max_rss_bytes=r[13],
            )
            if run.status == STATUS_RUNNING and not _pid_alive(run.runner_pid):
                run.status = STATUS_LOST
            runs.append(run)
        return runs

    # ------------------------------------------------------------ scheduled jobs

    def last_scheduled(self, job: str) -> float | None:
        """The schedule time of ``job`` last handled (started, skipped or missed), None when never."""
        try:
            with self._connect(create=False) as conn:
                row = conn.execute("SELECT last_scheduled_s FROM cron_schedules WHERE job=?", (job,)).fetchone()
        except FileNotFoundError:
            return None
        return float(row[0]) if row else None

    def set_last_scheduled(self, job: str, scheduled_s: float) -> None:
        with self._connect(create=True) as conn:
            conn.execute("INSERT INTO cron_schedules (job, last_scheduled_s) VALUES (?, ?) ON CONFLICT(job) DO "
                         "UPDATE SET last_scheduled_s=excluded.last_scheduled_s", (job, scheduled_s))

    def add_plan(self, job: str, scheduled_s: float, start_s: float) -> None:
        """A carbon-aware run planned for ``start_s`` (kept so a restarted controller starts it)."""
        with self._connect(create=True) as conn:
            conn.execute("INSERT OR REPLACE INTO cron_plans (job, scheduled_s, start_s) VALUES (?, ?, ?)",
                         (job, scheduled_s, start_s))

    def drop_plan(self, job: str, scheduled_s: float) -> None:
        with self._connect(create=True) as conn:
            conn.execute("DELETE FROM cron_plans WHERE job=? AND scheduled_s=?", (job, scheduled_s))

    def plans(self) -> list[tuple[str, float, float]]:
        """Every planned run: (job, scheduled time, planned start)."""
        try:
            with self._connect(create=False) as conn:
                rows = conn.execute("SELECT job, scheduled_s, start_s FROM cron_plans ORDER BY start_s").fetchall()
        except FileNotFoundError:
            return []
        return [(str(r[0]), float(r[1]), float(r[2])) for r in rows]

    def prune(self, job: str, pipeline_prefix: str, keep_succeeded: int, keep_failed: int) -> list[str]:
        """Drop the oldest finished pipelines of ``job`` whose id starts with ``pipeline_prefix`` (a scheduled
        run with all its attempts) beyond the numbers kept, succeeded and not, with their logs; the run ids
        dropped. Runs of other pipelines (``lichen run``) are never touched."""
        pipelines: dict[str, list[JobRun]] = {}
        for run in self.list(job):  # newest first
            if run.pipeline_id.startswith(pipeline_prefix):
                pipelines.setdefault(run.pipeline_id, []).append(run)
        finished = [runs for runs in pipelines.values()
                    if not any(r.status in (STATUS_RUNNING, STATUS_LOST) for r in runs)]
        succeeded = [runs for runs in finished if runs[0].status == STATUS_SUCCEEDED]  # its last attempt
        failed = [runs for runs in finished if runs[0].status != STATUS_SUCCEEDED]
        dropped_runs = [run for kept, group in ((keep_succeeded, succeeded), (keep_failed, failed))
                        for runs in group[kept:] for run in runs]
        for run in dropped_runs:
            if run.log_path:
                with contextlib.suppress(OSError):
                    Path(run.log_path).unlink()
        if dropped_runs:
            with self._connect(create=True) as conn:
                conn.executemany("DELETE FROM job_runs WHERE run_id=?", [(r.run_id,) for r in dropped_runs])
        return [r.run_id for r in dropped_runs]
