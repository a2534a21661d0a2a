"""Fuzzing the spec loader (what ``lichen validate`` and ``lichen up`` read): any file gives a spec or located errors.

The property, for every input: ``check_spec`` returns either a model and no
issue, or no model and at least one issue located at ``file:line:column``
(line and column >= 1, a message); ``load_spec`` raises :class:`SpecError` and
nothing else; ``spec_warnings`` never raises. Inputs: YAML-ish text, schema-shaped
data (real keys, values right or wrong), one to three breakages of each real
example, and bytes that are not UTF-8. Failing inputs the fuzzer found are kept
as ``@example`` s. Through the CLI, a handful of bad files each print located
errors and exit 2, without a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import fuzz_settings
from hypothesis import example, given, note
from hypothesis import strategies as st
from spec_strategies import app_data, dump, mutated, yaml_text

from lichen.errors import SpecError, SpecIssue
from lichen.green.intensity_sources import sustainability_issues
from lichen.observe.rule_files import rule_file_issues
from lichen.spec.loading import check_spec, load_spec
from lichen.spec.models import AppSpec
from lichen.spec.unbuilt_fields import spec_warnings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(REPO.glob("examples/*/lichen.yaml"))
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example: the spec file, and rule files a spec may name (good, bad, not UTF-8)."""
    root = tmp_path_factory.mktemp("fuzzspec")
    (root / "rules.yml").write_text("groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: up == 0\n")
    (root / "bad.yml").write_text("groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: 'up =='\n")
    (root / "latin1.yml").write_bytes(b"groups: [\xe9]\n")
    (root / "adir.yml").mkdir()
    return root


def assert_located(spec_path: Path, spec: AppSpec | None, issues: list[SpecIssue]) -> None:
    """The one outcome allowed: a model and no issue, or no model and located issues."""
    if spec is not None:
        assert issues == [], issues
        return
    assert issues, "no model and no issue"
    for issue in issues:
        assert isinstance(issue, SpecIssue)
        assert issue.line >= 1 and issue.column >= 1, issue
        assert issue.message.strip(), issue
        assert issue.file == str(spec_path) or issue.file.endswith(".yml"), issue
        assert "Traceback" not in issue.message, issue


def check_file(spec_path: Path) -> None:
    """Every way the loader reads a file: the full check, load_spec, and the unbuilt-field warnings."""
    spec, issues = check_spec(spec_path, check_imports=False, rule_checker=rule_file_issues,
                              data_checker=sustainability_issues)
    assert_located(spec_path, spec, issues)
    try:
        loaded = load_spec(spec_path)
    except SpecError as exc:
        assert exc.issues and str(exc)
    else:
        assert isinstance(loaded, AppSpec)
    for warning in spec_warnings(spec_path):
        assert warning.line >= 1 and warning.message


def check_text(spec_dir: Path, text: str) -> None:
    note(f"lichen.yaml: {text!r}")
    path = spec_dir / "lichen.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_file(path)


# Found by these fuzzers (before the fixes named beside them); each stays as a regression test.
REGRESSIONS: list[str] = []


@fuzz_settings(300)
@given(text=yaml_text)
@example(text="app: demo\n# \x1f\n")  # a control character: PyYAML's ReaderError was a traceback (documents.py)
@example(text="app: !!int ''\n")  # a scalar SafeLoader cannot build: IndexError (documents.LocatingSafeLoader)
@example(text="app: demo\nx-when: 2024-02-30\n")  # an implicit timestamp that is no date: ValueError
@example(text="app: 0x_\n")  # an implicit hexadecimal integer without digits: ValueError
@example(text="!!bool x: 1\n")  # a key SafeLoader cannot build: KeyError
def test_yaml_like_text_gives_a_spec_or_located_errors(spec_dir: Path, text: str) -> None:
    check_text(spec_dir, text)


@fuzz_settings(60)
@given(text=st.text(max_size=200))
def test_arbitrary_text_gives_a_spec_or_located_errors(spec_dir: Path, text: str) -> None:
    check_text(spec_dir, text)


@fuzz_settings(250)
@given(data=app_data, flow=st.sampled_from([False, True, None]))
def test_schema_shaped_data_gives_a_spec_or_located_errors(spec_dir: Path, data: dict[str, Any], flow: bool | None) -> None:
    check_text(spec_dir, dump(data, flow=flow))


def _example_data() -> list[Any]:
    return [yaml.safe_load(path.read_text()) for path in EXAMPLES]


@fuzz_settings(200)
@given(data=st.sampled_from(_example_data()).flatmap(mutated))
def test_broken_examples_give_a_spec_or_located_errors(spec_dir: Path, data: Any) -> None:
    check_text(spec_dir, dump(data))


@fuzz_settings(100)
@given(source=st.sampled_from([p.read_bytes() for p in EXAMPLES]), at=st.integers(0, 10_000),
       junk=st.binary(min_size=1, max_size=4))
def test_bytes_that_are_not_utf8_give_a_located_error(spec_dir: Path, source: bytes, at: int, junk: bytes) -> None:
    raw = source[: at % len(source)] + junk + source[at % len(source):]
    note(f"lichen.yaml: {raw!r}")
    path = spec_dir / "lichen.yaml"
    path.write_bytes(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        spec, issues = check_spec(path, check_imports=False)
        assert spec is None
        assert len(issues) == 1 and "UTF" in issues[0].message, issues
        assert_located(path, spec, issues)
    else:
        check_file(path)


def run_validate(spec_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICHEN, "validate", str(spec_path), "--no-imports"], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.slow
@fuzz_settings(4)
@given(data=st.sampled_from(_example_data()).flatmap(mutated))
def test_lichen_validate_on_generated_files_exits_0_or_2_without_a_traceback(spec_dir: Path, data: Any) -> None:
    spec_path = spec_dir / "lichen.yaml"
    spec_path.write_text(dump(data))
    note(f"lichen.yaml: {spec_path.read_text()!r}")
    result = run_validate(spec_path)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 2), output
    assert "Traceback" not in output, output
    if result.returncode == 2:
        assert f"{spec_path}:" in result.stdout and "problem" in result.stderr, output


BAD_FILES = {
    "invalid_yaml": b"app: demo\nservices: [\n",
    "not_utf8": b"app: d\xe9mo\n",
    "wrong_types": b"app: 12\nservices:\n  api: {entrypoint: m:C, replicas: many, resources: {memory: lots}}\n",
    "alias_loop": b"x-a: &a [*a]\napp: demo\n",
    "deep": b"app: demo\nx-deep: " + b"[" * 200 + b"]" * 200 + b"\n",
    "python_tag": b"app: !!python/object/apply:os.system ['true']\n",
    "control_character": b"app: demo\n# \x1f\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_lichen_validate_prints_located_errors_without_a_traceback(tmp_path: Path, name: str) -> None:
    spec_path = tmp_path / "lichen.yaml"
    spec_path.write_bytes(BAD_FILES[name])
    result = run_validate(spec_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert f"{spec_path}:" in result.stdout, output
    assert "problem" in result.stderr, output
