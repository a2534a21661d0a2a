"""Every rule unit test in this directory must pass under both `promtool test rules` and `lichen rules test`.

CI installs Debian's prometheus package (promtool 2.42). The test fails if the two verdicts differ
for any file, or if either tool fails a file (the expected values are written to be correct).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lichen.observe.promtool_tests import run_test_file

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.yml"))
PROMTOOL = shutil.which("promtool")


def test_there_are_at_least_40_conformance_files() -> None:
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_same_verdict_as_promtool(path: Path) -> None:
    lichen = run_test_file(path)
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (CI installs Debian's prometheus package)")
    proc = subprocess.run([PROMTOOL, "test", "rules", path.name], cwd=HERE, capture_output=True, text=True, timeout=60)
    promtool_ok = proc.returncode == 0
    assert lichen.ok == promtool_ok, f"verdicts differ: lichen={lichen.ok} promtool={promtool_ok}\n{lichen.report()}\n{proc.stdout}{proc.stderr}"
    assert lichen.ok, lichen.report()


def test_cli_runs_the_whole_suite() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lichen"), "rules", "test", *[str(p) for p in FILES[:5]]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 5
