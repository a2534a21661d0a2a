"""docs/spec.md documents every field of every spec model, with the model's default, and nothing else.

Convention: each reference table row starts with the field's dotted path in
backticks (``<name>`` for a named item, ``[]`` for a list item); the third
column is ``required``, ``section``, or the default in backticks as
:mod:`spec_fields` renders it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from spec_fields import REQUIRED, SECTION, spec_fields  # noqa: E402

from lichen.spec.loading import check_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "spec.md"
ROW = re.compile(r"^\|\s*`([a-z0-9_<>\[\].]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$", re.M)


def _rows() -> dict[str, tuple[str, str, str]]:
    rows: dict[str, tuple[str, str, str]] = {}
    for match in ROW.finditer(DOC.read_text()):
        path, kind, default, meaning = (g.strip() for g in match.groups())
        assert path not in rows, f"docs/spec.md documents {path} twice"
        rows[path] = (kind, default, meaning)
    return rows


def test_every_model_field_is_documented_and_nothing_else() -> None:
    documented = set(_rows())
    fields = {f.path for f in spec_fields()}
    assert len(fields) > 100
    assert sorted(fields - documented) == [], "fields missing from docs/spec.md"
    assert sorted(documented - fields) == [], "docs/spec.md names fields that do not exist"


def test_documented_defaults_match_the_models() -> None:
    rows = _rows()
    wrong = []
    for field in spec_fields():
        kind, default, meaning = rows[field.path]
        assert kind and len(meaning.split()) >= 3, f"{field.path}: type and meaning must be filled in"
        if field.default is REQUIRED:
            expected = "required"
        elif field.default is SECTION:
            expected = "section"
        else:
            expected = f"`{field.default}`"
        if default != expected:
            wrong.append(f"{field.path}: docs say {default}, model says {expected}")
    assert not wrong, "\n".join(wrong)


def test_full_example_is_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"## A full example.*?```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/spec.md has a full example"
    example = tmp_path / "lichen.yaml"
    example.write_text(blocks[0])
    spec, issues = check_spec(example, check_imports=False)
    assert issues == [] and spec is not None
    # The example exercises every section.
    assert set(yaml.safe_load(blocks[0])) == set(type(spec).model_fields)
