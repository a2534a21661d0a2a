"""The spec never over-promises: every field in the unbuilt table warns, is unread, and is marked in docs/spec.md."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lichen.cli.main import app as cli
from lichen.control.plans import Machine
from lichen.observe.default_rules import default_rules
from lichen.runtime.controlling import Controller
from lichen.runtime.gatewaying import attach_gateway
from lichen.runtime.running_jobs import JobRunner
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.loading import model_at
from lichen.spec.models import AppSpec
from lichen.spec.unbuilt_fields import ANY, UNBUILT_FIELDS, UnbuiltField, spec_warnings
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

DOC = Path(__file__).resolve().parents[3] / "docs" / "spec.md"

# Every unbuilt field written with a value that asks for it, each on its own line (none are left today: a row
# added to UNBUILT_FIELDS adds its field here and its line to LINES).
UNBUILT_SPEC = """\
app: shop
services:
  api:
    entrypoint: shopsvc:Api
    rollout:
      strategy: canary
      steps: [20, 100]
      analysis: {max_error_ratio: 0.02, queries: [{name: q, query: up, max_value: 1}]}
    image: registry.example.com/shop/api:1
jobs:
  train:
    entrypoint: shopjobs:train
    schedule: "0 3 * * *"
    carbon_aware: {deadline: 2h}
    resources: {cpu: 1}
sustainability: {region: DE, pue: 1.3}
kubernetes: {namespace: shop}
"""
LINES: dict[str, int] = {}  # the row's dotted path -> the line that writes it in UNBUILT_SPEC

# The machinery is checked with a stand-in row, so it keeps working while the table is empty: it pretends
# that a job's cpu (line 15 of UNBUILT_SPEC) were not built.
STAND_IN = UnbuiltField(("jobs", ANY, "resources", "cpu"), "stand-in: job CPU limits are not built yet",
                        built_for=lambda value: value is None)
STAND_IN_LINE = 15


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from lichen.spec import unbuilt_fields

    monkeypatch.setattr(unbuilt_fields, "UNBUILT_FIELDS", (STAND_IN,))


def test_every_row_names_a_real_field_and_the_fixture_covers_every_row() -> None:
    for row in UNBUILT_FIELDS:
        owner = model_at(tuple("x" if part == ANY else part for part in row.path[:-1]))
        assert owner is not None and row.path[-1] in owner.model_fields, row.dotted
    assert sorted(LINES) == sorted(row.dotted for row in UNBUILT_FIELDS if row.warn)
    silent = [row for row in UNBUILT_FIELDS if not row.warn]
    assert all(any(row.path[:len(p.path)] == p.path for p in UNBUILT_FIELDS if p.warn) for row in silent)


def test_each_unbuilt_field_written_gets_one_located_warning(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text(UNBUILT_SPEC)
    warnings = spec_warnings(path)
    assert {(w.line, re.sub(r"\.(api|train)\.", ".<name>.", w.field)) for w in warnings} == {
        (line, field) for field, line in LINES.items()}
    assert all(w.severity == "warning" and str(w).startswith(f"{path}:{w.line}:") for w in warnings)
    # built by lichen build / lichen render: no warning, though lichen up itself runs no image
    assert not any(w.field.endswith(".image") or w.field.startswith("kubernetes") for w in warnings)


def test_a_row_in_the_table_warns_at_the_line_that_writes_its_field(tmp_path: Path, stand_in: None) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text(UNBUILT_SPEC)
    [warning] = spec_warnings(path)
    assert (warning.line, warning.field, warning.severity) == (STAND_IN_LINE, "jobs.train.resources.cpu", "warning")
    assert str(warning).startswith(f"{path}:{STAND_IN_LINE}:") and "stand-in: job CPU limits" in str(warning)
    path.write_text(UNBUILT_SPEC.replace("resources: {cpu: 1}", "resources: {}"))  # a value that asks for nothing
    assert spec_warnings(path) == []


def test_a_jobs_gpu_is_built_and_no_longer_warns(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text("app: shop\njobs:\n  train:\n    entrypoint: shopjobs:train\n    resources: {gpu: 1}\n")
    assert spec_warnings(path) == []


def test_sustainability_is_built_and_no_longer_warns(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text("app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\nsustainability:\n  region: DE\n"
                    "  pue: 1.3\n  cpu_tdp_w: 65\n  intensity_api: {provider: electricitymaps, token_env: EM_TOKEN}\n")
    assert spec_warnings(path) == []


def test_autoscale_is_built_and_no_longer_warns(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text("app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n    autoscale:\n      min: 2\n"
                    "      max: 10\n      metric: rps\n      target: 50\n      panic_window_s: 3\n")
    assert spec_warnings(path) == []
    assert not any(row.path[2:3] == ("autoscale",) for row in UNBUILT_FIELDS if len(row.path) > 2)


def test_values_that_ask_for_what_is_built_get_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text(textwrap.dedent("""\
        app: shop
        services:
          api:
            entrypoint: shopsvc:Api
            replicas: 2
            rollout: {strategy: rolling, max_surge: 1}
        jobs:
          train:
            entrypoint: shopjobs:train
            schedule: null
            resources: {gpu: 0, cpu: 1}
        """))
    assert spec_warnings(path) == []


def test_validate_and_up_print_the_warnings_and_validate_still_passes(tmp_path: Path, stand_in: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lichen.yaml").write_text(UNBUILT_SPEC)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), "--no-imports"])
    assert result.exit_code == 0, result.output
    assert result.output.count(" warning: ") == 1
    assert "valid: app 'shop', 1 service, 1 job (1 warning" in result.output
    as_json = CliRunner().invoke(cli, ["validate", str(tmp_path), "--no-imports", "--json"])
    assert as_json.exit_code == 0 and '"warnings": [' in as_json.output and '"valid": true' in as_json.output
    # lichen up warns before it starts anything (the start itself is replaced here: nothing runs)
    from lichen.cli import controlling

    started: list[Path] = []
    monkeypatch.setattr(controlling, "_running_client", lambda path: None)
    monkeypatch.setattr(controlling, "_start_daemon", lambda workspace, wait, timeout_s: started.append(workspace))
    up = CliRunner().invoke(cli, ["up", str(tmp_path), "--detach"])
    assert up.exit_code == 0 and len(started) == 1, up.output
    assert up.output.count(" warning: ") == 1
    assert "jobs.train.resources.cpu: warning: stand-in: job CPU limits are not built yet" in up.output


REFERENCE_ROW = re.compile(r"^\|\s*`([a-z0-9_<>\[\].]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$", re.M)


def test_docs_mark_every_unbuilt_field() -> None:
    text = DOC.read_text()
    section = text.split("## Designed, not built yet", 1)[1].split("\n## ", 1)[0]
    reference = {m.group(1): m.group(0) for m in REFERENCE_ROW.finditer(text)}
    for row in UNBUILT_FIELDS:
        assert f"`{row.dotted}`" in section, f"docs/spec.md does not list {row.dotted} as not built"
        rows = [line for path, line in reference.items() if path == row.dotted
                or path.startswith(row.dotted + ".")]
        assert rows and all("not built yet" in line.lower() for line in rows), row.dotted


# ------------------------------------------------------------------ unread


def _track(owner: Any, attribute: str, reads: list[str], label: str) -> None:
    """Record every read of ``owner.<attribute>`` (the instance gets a subclass that notes the access)."""
    cls = type(owner)

    def getattribute(self: Any, name: str, _get: Any = cls.__getattribute__) -> Any:
        if name == attribute:
            reads.append(label)
        return _get(self, name)

    owner.__class__ = type(f"Tracked{cls.__name__}", (cls,), {"__getattribute__": getattribute})


def _owners(spec: AppSpec, path: tuple[str, ...]) -> list[Any]:
    found = [spec]
    for part in path[:-1]:
        following = []
        for node in found:
            if part == ANY:
                following.extend(node.values())
            else:
                following.append(getattr(node, part) if not isinstance(node, dict) else node[part])
        found = [n for n in following if n is not None]
    return found


@pytest.mark.slow
def test_the_runtime_reads_none_of_the_unbuilt_fields(tmp_path: Path) -> None:
    """Run what `lichen up`, the gateway, the rule pack and `lichen run` do with a spec that sets every unbuilt
    field, and record any read of them. A row whose feature gets built starts being read: delete the row."""
    (tmp_path / "shopjobs.py").write_text("def train(*args: str) -> None:\n    print('trained')\n")
    data = __import__("yaml").safe_load(UNBUILT_SPEC)
    data["gateway"] = {"port": 18095}
    spec = AppSpec.model_validate(data)
    reads: list[str] = []
    for row in UNBUILT_FIELDS:
        for owner in _owners(spec, row.path):
            _track(owner, row.path[-1], reads, row.dotted)

    async def run_the_control_plane() -> None:
        store = StateStore(tmp_path / "state.db")
        controller = Controller(Workspace(tmp_path), store, launcher=FakeLauncher(), prober=FakeProber(),
                                clock=LoopClock(), machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=(0,)))
        controller.apply(spec, "code1")
        attach_gateway(controller)
        task = asyncio.create_task(controller.run())

        def ready() -> bool:
            return [r["state"] for r in controller.status()["replicas"]] == ["Ready"]

        await until(ready, "a ready replica")
        revision = controller.services["api"].revision
        controller.restart("api")  # a rollout: where a canary would act
        await until(lambda: ready() and controller.status()["replicas"][0]["revision"] != revision, "the rollout")
        controller.apply(spec, "code1")  # re-applying the same spec
        controller.scale("api", 2)
        await until(lambda: len(controller.status()["replicas"]) == 2, "the scale-up")
        controller.shutdown()
        await asyncio.wait_for(task, 60)
        store.close()

    run_in_virtual_time(run_the_control_plane())  # the controller's real loop on virtual time
    default_rules(spec)
    result = JobRunner(spec, tmp_path).run(["train"])
    assert result.exit_code == 0, [r.status for r in result.runs]
    assert reads == [], f"the runtime read unbuilt fields (delete their rows from UNBUILT_FIELDS): {sorted(set(reads))}"


def test_carbon_aware_without_a_schedule_warns_that_lichen_run_starts_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text("app: shop\njobs:\n  train:\n    entrypoint: shopjobs:train\n    carbon_aware: {deadline: 2h}\n"
                    "  nightly:\n    entrypoint: shopjobs:train\n    schedule: '0 3 * * *'\n"
                    "    carbon_aware: {deadline: 6h}\n")
    [warning] = spec_warnings(path)
    assert (warning.line, warning.field, warning.severity) == (5, "jobs.train.carbon_aware", "warning")
    assert "has no schedule" in warning.message


def test_scheduling_fields_on_a_job_without_a_schedule_warn_and_impossible_dates_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text("app: shop\njobs:\n  train:\n    entrypoint: shopjobs:train\n    concurrency_policy: allow\n"
                    "    failed_runs_kept: 5\n")
    assert [(w.line, w.field) for w in spec_warnings(path)] == [(5, "jobs.train.concurrency_policy"),
                                                                (6, "jobs.train.failed_runs_kept")]
    from lichen.spec.loading import validate_spec

    for schedule, ok in (("0 0 30 2 *", False), ("0 0 31 4,6 *", False), ("0 0 30 2 1", True),
                         ("0 0 29 2 *", True)):
        path.write_text(f"app: shop\njobs:\n  train:\n    entrypoint: shopjobs:train\n    schedule: '{schedule}'\n")
        issues = validate_spec(path, check_imports=False)
        assert (issues == []) == ok, (schedule, issues)
        if not ok:
            assert issues[0].line == 5 and "names no date that exists" in issues[0].message

