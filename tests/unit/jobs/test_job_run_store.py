"""The job_runs table: a state store written before a column existed is upgraded in place, its runs kept."""

from __future__ import annotations

import sqlite3

from lichen.runtime.job_runs import STATUS_SUCCEEDED, JobRun, JobRunStore

OLD_SCHEMA = """
CREATE TABLE job_runs (
    run_id TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL, job TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1,
    argv TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL, exit_code INTEGER,
    artifacts TEXT NOT NULL DEFAULT '[]', log_path TEXT, log_tail TEXT, runner_pid INTEGER
);
INSERT INTO job_runs (run_id, pipeline_id, job, argv, started_at, ended_at, status, exit_code)
VALUES ('old1', 'p0', 'train', '[]', 100.0, 160.0, 'succeeded', 0);
"""


def test_an_older_store_gains_the_peak_memory_column_and_keeps_its_runs(tmp_path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    store = JobRunStore(path)
    old, = store.list()
    assert (old.run_id, old.duration_s, old.max_rss_bytes) == ("old1", 60.0, None)
    run = JobRun(run_id="new1", pipeline_id="p1", job="train", started_at=200.0)
    store.start(run)
    run.status, run.exit_code, run.ended_at, run.max_rss_bytes = STATUS_SUCCEEDED, 0, 230.0, 512 * 2**20
    store.finish(run)
    assert [(r.run_id, r.max_rss_bytes) for r in JobRunStore(path).list()] == [("new1", 512 * 2**20), ("old1", None)]
    assert JobRunStore(path).list()[0].to_json()["max_rss_bytes"] == 512 * 2**20
