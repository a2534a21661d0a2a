"""`lichen advise`'s argument errors and its write-back (lichen.cli.advising), without a controller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lichen.cli.advising import planned_changes, rewrite
from lichen.errors import ConfigError

LICHEN = str(Path(sys.executable).with_name("lichen"))
SPEC = """\
app: shop   # the shop
services:
  api:
    entrypoint: shopsvc:Api
    replicas: 3   # busy at noon
    resources: {cpu: 1, memory: 2Gi}
"""


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("window", "message"), [("abc", "--window"), ("30s", "between 1m and 400d"),
                                                 ("1000d", "between 1m and 400d")])
def test_a_bad_window_is_one_located_error(tmp_path: Path, window: str, message: str) -> None:
    result = _lichen("advise", "--window", window, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_service_is_refused_naming_the_services(tmp_path: Path) -> None:
    (tmp_path / "lichen.yaml").write_text(SPEC)
    result = _lichen("advise", "--service", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "no service named 'nope'" in result.stderr and "services: api" in result.stderr


def test_changes_map_to_key_paths_in_report_order() -> None:
    report = {"services": [
        {"service": "api", "changes": [{"field": "resources.cpu", "recommended": 0.25},
                                       {"field": "replicas", "recommended": 2}]},
        {"service": "worker", "changes": [{"field": "autoscale.max", "recommended": 6}]}]}
    assert planned_changes(report) == [(("services", "api", "resources", "cpu"), 0.25),
                                       (("services", "api", "replicas"), 2),
                                       (("services", "worker", "autoscale", "max"), 6)]


def test_rewrite_keeps_comments_and_refuses_a_spec_that_would_not_validate(tmp_path: Path) -> None:
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_text(SPEC)
    before, after = rewrite(spec_path, [(("services", "api", "replicas"), 2),
                                        (("services", "api", "resources", "cpu"), 0.25)])
    assert before == SPEC and spec_path.read_text() == SPEC, "rewrite only proposes; the verb writes"
    assert "replicas: 2   # busy at noon" in after and "app: shop   # the shop" in after
    assert "{cpu: 0.25, memory: 2Gi}" in after
    with pytest.raises(ConfigError, match=r"would not validate, so nothing was written: .*lichen.yaml:6.*cpu"):
        rewrite(spec_path, [(("services", "api", "resources", "cpu"), -1)])
    assert spec_path.read_text() == SPEC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lichen.yaml"], "no trial file is left behind"


def test_the_recsys_spec_is_rewritten_with_its_comments_intact_and_still_validates(tmp_path: Path) -> None:
    recsys = Path(__file__).resolve().parents[2] / "examples" / "recsys" / "lichen.yaml"
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_text(recsys.read_text())
    report = {"services": [
        {"service": "recommender", "changes": [{"field": "resources.cpu", "recommended": 0.2},
                                               {"field": "resources.memory", "recommended": "320Mi"}]},
        {"service": "events", "changes": [{"field": "replicas", "recommended": 2}]}]}
    before, after = rewrite(spec_path, planned_changes(report))
    assert [line for line in before.splitlines() if "#" in line] == [line for line in after.splitlines() if "#" in line]
    assert len(after.splitlines()) == len(before.splitlines())
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [("    resources: {cpu: 0.5, memory: 1Gi}", "    resources: {cpu: 0.2, memory: 320Mi}"),
                       ("    replicas: 1", "    replicas: 2")]


def test_a_file_edited_since_the_app_read_it_is_not_overwritten(tmp_path: Path) -> None:
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_text(SPEC.replace("{cpu: 1, memory: 2Gi}", "{cpu: 1500m, memory: 2048Mi}"))
    report = {"services": [{"service": "api", "changes": [
        {"field": "resources.cpu", "current": 1.0, "recommended": 0.25},
        {"field": "resources.memory", "current": "2Gi", "recommended": "256Mi"},
        {"field": "replicas", "current": 3, "recommended": 2}]}]}
    with pytest.raises(ConfigError, match=r"changed since the running app applied it.*resources.cpu is '1500m' in "
                                          r"the file, 1.0 in the running app\): run 'lichen up'") as caught:
        rewrite(spec_path, planned_changes(report), report)
    assert "memory" not in str(caught.value), "2048Mi is 2Gi: the same value written another way"
    spec_path.write_text(SPEC)
    rewrite(spec_path, planned_changes(report), report)  # the values the app runs with: accepted


def test_an_unreadable_spec_is_a_located_error(tmp_path: Path) -> None:
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_bytes(b"app: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        rewrite(spec_path, [(("services", "api", "replicas"), 2)])


def test_a_default_left_out_of_the_file_is_not_taken_for_an_edit(tmp_path: Path) -> None:
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_text("app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n")  # replicas: the default, 1
    report = {"services": [{"service": "api", "changes": [{"field": "replicas", "current": 1, "recommended": 3}]}]}
    _, after = rewrite(spec_path, planned_changes(report), report)
    assert after.endswith("    entrypoint: shopsvc:Api\n    replicas: 3\n")
