"""Every spec in bad_specs/ gives exactly the issues its header promises, each on its line.

A corpus file starts with comments of the form ``# expect: LINE: FRAGMENT``.
Each expectation must match one issue (same line, fragment contained in the
printed issue) and every issue must be expected: nothing missing, nothing extra.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from lichen.errors import SpecError
from lichen.spec.loading import load_spec, validate_spec

CORPUS = Path(__file__).parent / "bad_specs"
EXPECT = re.compile(r"^# expect: (\d+): (.+)$", re.M)


def _expectations(path: Path) -> list[tuple[int, str]]:
    return [(int(line), fragment.strip()) for line, fragment in EXPECT.findall(path.read_text())]


SPECS = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_enough() -> None:
    assert len(SPECS) >= 25
    assert all(_expectations(p) for p in SPECS), "every corpus file declares what it expects"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_bad_spec_reports_precise_issues(path: Path) -> None:
    expected = _expectations(path)
    issues = validate_spec(path)
    unmatched = list(issues)
    for line, fragment in expected:
        hits = [i for i in unmatched if i.line == line and fragment in str(i)]
        assert hits, f"expected line {line}: {fragment!r}\ngot:\n" + "\n".join(str(i) for i in issues)
        unmatched.remove(hits[0])
    assert not unmatched, "unexpected issues:\n" + "\n".join(str(i) for i in unmatched)
    for issue in issues:
        assert str(issue).startswith(f"{path}:{issue.line}:{issue.column}")
        assert issue.column >= 1


@pytest.mark.parametrize("path", SPECS[:5], ids=[p.stem for p in SPECS[:5]])
def test_load_spec_raises_with_every_issue(path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(path, check_imports=True)
    assert caught.value.issues == validate_spec(path)
    assert caught.value.exit_code == 2


def test_import_checks_leave_the_process_clean() -> None:
    before_path, before_modules = list(sys.path), set(sys.modules)
    validate_spec(CORPUS / "missing_attribute.yaml")
    validate_spec(CORPUS / "import_raises.yaml")
    assert sys.path == before_path
    assert not [m for m in set(sys.modules) - before_modules if m.startswith("badspec_fixture")]


def test_no_imports_skips_entrypoint_checks() -> None:
    assert validate_spec(CORPUS / "missing_module.yaml", check_imports=False) == []
