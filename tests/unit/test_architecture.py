"""The layers in docs/architecture.md are enforced with import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: " in result.stdout and " broken" in result.stdout


def test_architecture_doc_names_every_layer() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(p.name for p in (ROOT / "src" / "lichen").iterdir() if (p / "__init__.py").exists())
    missing = [name for name in packages if f"lichen.{name}" not in doc]
    assert not missing, f"docs/architecture.md does not describe: {missing}"


def test_every_package_says_what_belongs_there() -> None:
    import importlib

    for path in sorted((ROOT / "src" / "lichen").iterdir()):
        if (path / "__init__.py").exists():
            module = importlib.import_module(f"lichen.{path.name}")
            assert module.__doc__ and len(module.__doc__.split()) >= 8, f"lichen.{path.name} needs a docstring"
