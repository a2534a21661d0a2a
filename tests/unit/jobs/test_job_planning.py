"""Job selection and ordering, secrets files, and the run-history table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lichen.errors import ConfigError
from lichen.runtime.job_runs import STATUS_LOST, STATUS_SUCCEEDED, JobRun, JobRunStore, state_db_path
from lichen.runtime.running_jobs import order_jobs
from lichen.runtime.workspaces import read_secrets_file, resolve_secrets
from lichen.spec.models import JobSpec


def _jobs(**deps: list[str]) -> dict[str, JobSpec]:
    return {name: JobSpec(entrypoint=f"m:{name}", depends_on=d) for name, d in deps.items()}


PIPELINE = _jobs(evaluate=["train"], ingest=[], train=["features"], features=["ingest"], report=[])


def test_all_jobs_run_dependencies_first_ties_in_spec_order() -> None:
    assert order_jobs(PIPELINE, []) == ["ingest", "features", "train", "evaluate", "report"]


def test_named_jobs_only_by_default_like_make() -> None:
    assert order_jobs(PIPELINE, ["evaluate", "features"]) == ["features", "evaluate"]


def test_with_deps_adds_transitive_dependencies() -> None:
    assert order_jobs(PIPELINE, ["train"], with_deps=True) == ["ingest", "features", "train"]


def test_unknown_job_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        order_jobs(PIPELINE, ["trian"])


def test_cycle_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cycle: a, b"):
        order_jobs(_jobs(a=["b"], b=["a"]), [])


def test_secrets_file_and_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / ".lichen").mkdir()
    (tmp_path / ".lichen" / "secrets.env").write_text(
        "# comment\nexport API_TOKEN='from-file'\nDB_PASSWORD=\"p@ss\"\n\n"
    )
    secrets_file = tmp_path / ".lichen" / "secrets.env"
    assert read_secrets_file(secrets_file) == {
        "API_TOKEN": "from-file",
        "DB_PASSWORD": "p@ss",
    }
    got = resolve_secrets(["API_TOKEN", "DB_PASSWORD"], {"API_TOKEN": "from-env"}, "jobs.x.secrets",
                          legacy_file=secrets_file)
    assert got == {"API_TOKEN": "from-env", "DB_PASSWORD": "p@ss"}
    with pytest.raises(ConfigError, match="jobs.x.secrets: MISSING not set"):
        resolve_secrets(["MISSING"], {}, "jobs.x.secrets", legacy_file=secrets_file)
    secrets_file.write_text("GOOD=1\nnot a line\n")
    with pytest.raises(ConfigError, match="secrets.env:2"):
        read_secrets_file(secrets_file)


def test_state_url_resolution(tmp_path: Path) -> None:
    assert state_db_path("sqlite:///.lichen/state.db", tmp_path) == tmp_path / ".lichen" / "state.db"
    assert state_db_path("sqlite:////var/x.db", tmp_path) == Path("/var/x.db")


def test_run_store_round_trip_and_lost_runs(tmp_path: Path) -> None:
    store = JobRunStore(tmp_path / "state.db")
    assert store.list() == []
    done = JobRun(run_id="r1", pipeline_id="p", job="ingest", started_at=100.0, argv=["--data", "x"],
                  runner_pid=os.getpid())
    store.start(done)
    done.status, done.exit_code, done.ended_at, done.artifacts = STATUS_SUCCEEDED, 0, 102.5, ["/a"]
    store.finish(done)
    # A run whose runner vanished mid-run (pid that cannot exist) shows as lost.
    store.start(JobRun(run_id="r2", pipeline_id="p", job="train", started_at=103.0, runner_pid=2**22 + 12345))
    runs = store.list()
    assert [(r.run_id, r.status) for r in runs] == [("r2", STATUS_LOST), ("r1", STATUS_SUCCEEDED)]
    assert runs[1].duration_s == pytest.approx(2.5) and runs[1].argv == ["--data", "x"]
    assert runs[1].artifacts == ["/a"]
    assert [r.run_id for r in store.list(job="ingest")] == ["r1"]
