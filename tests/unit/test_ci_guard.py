"""The CI guard in tests/conftest.py: under ``CI=true`` any skip fails the
run, including a skip raised while collecting a module (module-level
``pytest.importorskip``, as the real-browser tests in tests/e2e/ use)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

SKIPPING_MODULES = {
    "importorskip": "import pytest\npytest.importorskip('lichen_no_such_module_for_the_ci_guard')\n\n"
    "def test_never_runs():\n    assert False\n",
    "module_level_skip": "import pytest\npytest.skip('no binary here', allow_module_level=True)\n\n"
    "def test_never_runs():\n    assert False\n",
    "test_level_skip": "import pytest\n\ndef test_skips():\n    pytest.skip('no binary here')\n",
}


def _run_suite(tmp_path: Path, skipping_source: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    """A throwaway suite with the project's conftest: one passing module and one that skips."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_passes.py").write_text("def test_passes():\n    assert 1 + 1 == 2\n")
    (tmp_path / "test_skips.py").write_text(skipping_source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("kind", sorted(SKIPPING_MODULES))
def test_a_skip_fails_the_run_in_ci_and_only_in_ci(tmp_path: Path, kind: str) -> None:
    ci = _run_suite(tmp_path, SKIPPING_MODULES[kind], ci="true")
    assert ci.returncode == pytest.ExitCode.TESTS_FAILED, ci.stdout + ci.stderr
    assert "every test must run in CI" in ci.stdout
    assert "test_skips.py" in ci.stdout

    local = _run_suite(tmp_path, SKIPPING_MODULES[kind], ci=None)
    assert local.returncode == pytest.ExitCode.OK, local.stdout + local.stderr
    assert "1 passed, 1 skipped" in local.stdout


def test_ci_run_sets_ci_itself() -> None:
    script = (REPO / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines()]
    assert "export CI=true" in lines, "`.ci/run` must export CI=true, not rely on its caller"
    assert lines.index("export CI=true") < lines.index("make test")
