"""Each service's code digest, read from a real app directory: an edit rolls only the services that import it."""

from __future__ import annotations

from pathlib import Path

from lichen.control.revisions import revision_id
from lichen.runtime.digesting import service_digests
from lichen.runtime.workspaces import code_digest
from lichen.spec.models import AppSpec

SPEC = AppSpec.model_validate({"app": "two", "services": {
    "a": {"entrypoint": "alpha:A"}, "b": {"entrypoint": "beta:B"}, "c": {"entrypoint": "pkg.gamma:C"}}})


def _app(root: Path) -> Path:
    files = {
        "alpha.py": "from shared import helper\nclass A: ...\n",
        "beta.py": "import json\nclass B: ...\n",
        "shared.py": "def helper(): ...\n",
        "pkg/__init__.py": "",
        "pkg/gamma.py": "from . import lexicon\nfrom shared import helper\nclass C: ...\n",
        "pkg/lexicon.py": "WORDS = ()\n",
        "pkg/words.json": "[]\n",
        "lichen.yaml": "app: two\n",
        "alerts.yml": "groups:\n  - name: g\n    rules: []\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_editing_one_services_module_changes_only_its_digest(tmp_path: Path) -> None:
    app = _app(tmp_path)
    first = service_digests(app, SPEC)
    assert len(set(first.values())) == 3
    (app / "beta.py").write_text("import json\nclass B:\n    x = 2\n")
    second = service_digests(app, SPEC)
    assert _changed(first, second) == {"b"}
    (app / "shared.py").write_text("def helper():\n    return 1\n")
    third = service_digests(app, SPEC)
    assert _changed(second, third) == {"a", "c"}  # b does not import the helper
    (app / "pkg" / "lexicon.py").write_text("WORDS = ('good',)\n")  # a relative import inside a package
    assert _changed(third, service_digests(app, SPEC)) == {"c"}


def test_a_data_file_in_a_package_rolls_the_services_importing_from_it(tmp_path: Path) -> None:
    app = _app(tmp_path)
    first = service_digests(app, SPEC)
    (app / "pkg" / "words.json").write_text('["good"]\n')
    assert _changed(first, service_digests(app, SPEC)) == {"c"}


def test_spec_rule_files_and_unimported_modules_roll_nothing(tmp_path: Path) -> None:
    app = _app(tmp_path)
    first, whole = service_digests(app, SPEC), code_digest(app)
    (app / "lichen.yaml").write_text("app: two\n# edited\n")
    (app / "alerts.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    (app / "tool.py").write_text("print('a script no service imports')\n")
    assert service_digests(app, SPEC) == first
    assert code_digest(app) != whole  # the whole-app digest, as before closures, would roll every service


def test_an_unparsable_module_falls_back_to_every_file(tmp_path: Path) -> None:
    app = _app(tmp_path)
    (app / "beta.py").write_text("import json\nclass B(:\n")
    first = service_digests(app, SPEC)
    (app / "alpha.py").write_text("from shared import helper\nclass A:\n    x = 1\n")
    assert _changed(first, service_digests(app, SPEC)) == {"a", "b"}  # b's closure is unknown: any edit rolls it


def test_the_revision_of_an_untouched_service_is_stable(tmp_path: Path) -> None:
    app = _app(tmp_path)
    before = {n: revision_id(n, s, service_digests(app, SPEC)[n]) for n, s in SPEC.services.items()}
    (app / "alpha.py").write_text("from shared import helper\nclass A:\n    y = 3\n")
    digests = service_digests(app, SPEC)
    after = {n: revision_id(n, s, digests[n]) for n, s in SPEC.services.items()}
    assert _changed(before, after) == {"a"}
