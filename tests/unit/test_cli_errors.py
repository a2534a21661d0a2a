"""The CLI's error contract: one line for a user error, a traceback only with --debug, and --version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lichen

LICHEN = str(Path(sys.executable).with_name("lichen"))


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=_env())


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "LICHEN_DEBUG"}


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = _lichen("validate", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: no spec file at missing.yaml (create one with 'lichen init')"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _lichen("--debug", "validate", "missing.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: no spec file at missing.yaml" in result.stderr


def test_error_text_with_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    # rich markup must not swallow '[...]' in messages.
    result = _lichen("init", str(tmp_path), "--name", "[bold]x", cwd=tmp_path)
    assert result.returncode == 2
    assert "got '[bold]x'" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2_with_a_hint(tmp_path: Path) -> None:
    result = _lichen("validate", "--no-such-flag", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such option" in result.stderr and "Traceback" not in result.stderr


def test_version(tmp_path: Path) -> None:
    result = _lichen("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"lichen {lichen.__version__}"


def test_every_spec_verb_has_help_with_an_example(tmp_path: Path) -> None:
    for verb in ("validate", "init"):
        result = _lichen(verb, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"Example: lichen {verb}" in " ".join(result.stdout.split())


def test_emoji_codes_in_user_text_are_printed_verbatim(tmp_path: Path) -> None:
    # rich would turn ':x:' in 'nosuch:x: no module' into an emoji.
    result = _lichen("serve", "nosuch:x", "--port", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: nosuch:x: no module named 'nosuch'"), result.stderr


def test_out_of_range_serve_options_are_one_line_errors(tmp_path: Path) -> None:
    for args, where in ((("--port", "99999"), "--port"), (("--grace-s", "nan"), "--grace-s"),
                        (("--grace-s", "inf"), "--grace-s")):
        result = _lichen("serve", "app:Api", *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: {where}: must be") and "Traceback" not in result.stderr


def test_validate_json_stays_parseable_when_the_app_prints_while_importing(tmp_path: Path) -> None:
    import json

    (tmp_path / "chatty.py").write_text(
        "print('loading the model...')\n"
        "from lichen import Service, endpoint\n\n"
        "class Api(Service):\n    @endpoint('/x')\n    def x(self) -> int:\n        return 1\n"
    )
    (tmp_path / "lichen.yaml").write_text("app: chatty\nservices:\n  api: {entrypoint: 'chatty:Api'}\n")
    result = _lichen("validate", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True
    assert "loading the model..." in result.stderr
