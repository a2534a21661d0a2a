"""The import closure a service's revision digests: pure functions over paths and source text."""

from __future__ import annotations

from lichen.control.import_closures import imported_names, import_closures, module_index, service_files


def closure(entry: str, sources: dict[str, str]) -> frozenset[str] | None:
    return import_closures({"svc": entry}, sources)["svc"]


def test_module_index_names_modules_packages_and_namespace_packages() -> None:
    index = module_index(["a.py", "pkg/__init__.py", "pkg/sub/m.py", "ns/x.py", "bad-dir/y.py", "__init__.py"])
    assert index == {"a": "a.py", "pkg": "pkg/__init__.py", "pkg.sub.m": "pkg/sub/m.py", "ns.x": "ns/x.py"}


def test_every_import_form_is_seen_anywhere_in_a_module() -> None:
    source = (
        "import os, a.b as ab\n"
        "from c import d, e\n"
        "from . import sibling\n"
        "from ..up import thing\n"
        "from .star import *\n"
        "def f():\n"
        "    import lazy\n"
        "try:\n"
        "    from optional import x\n"
        "except ImportError:\n"
        "    pass\n"
    )
    assert imported_names(source, "pkg.sub.mod", is_package=False) == {
        "os", "a.b", "c", "c.d", "c.e", "pkg.sub", "pkg.sub.sibling", "pkg.up", "pkg.up.thing",
        "pkg.sub.star", "pkg.sub.star.*", "lazy", "optional", "optional.x",
    }


def test_relative_imports_in_a_package_init_resolve_against_the_package_itself() -> None:
    assert imported_names("from . import a\nfrom .b import c\n", "pkg", is_package=True) == {
        "pkg", "pkg.a", "pkg.b", "pkg.b.c"}


def test_a_relative_import_beyond_the_top_level_is_not_followed_and_unparsable_source_is_none() -> None:
    assert imported_names("from .. import x\n", "top", is_package=False) == frozenset()
    assert imported_names("def broken(:\n", "m", is_package=False) is None


def test_editing_one_services_module_concerns_only_that_service() -> None:
    sources = {
        "alpha.py": "from shared import helper\nclass A: ...\n",
        "beta.py": "import json\nclass B: ...\n",
        "shared.py": "def helper(): ...\n",
        "unused.py": "import alpha\n",
    }
    closures = import_closures({"a": "alpha", "b": "beta"}, sources)
    assert closures == {"a": {"alpha.py", "shared.py"}, "b": {"beta.py"}}


def test_a_shared_helper_is_in_every_closure_that_imports_it() -> None:
    sources = {"alpha.py": "import shared\n", "beta.py": "from shared import helper\n",
               "shared.py": "def helper(): ...\n"}
    closures = import_closures({"a": "alpha", "b": "beta"}, sources)
    assert all("shared.py" in files for files in closures.values())


def test_packages_run_their_parents_init_and_from_pkg_import_follows_submodules() -> None:
    sources = {
        "app/__init__.py": "",
        "app/services.py": "from app import models\nfrom .helpers import h\n",
        "app/models/__init__.py": "from .ease import EASE\n",
        "app/models/ease.py": "import numpy\n",
        "app/models/als.py": "",
        "app/helpers.py": "def h(): ...\n",
        "app/jobs.py": "from app.models import als\n",
    }
    assert closure("app.services", sources) == {
        "app/__init__.py", "app/services.py", "app/models/__init__.py", "app/models/ease.py", "app/helpers.py"}


def test_import_a_b_c_runs_a_and_a_b_first() -> None:
    sources = {"a/__init__.py": "", "a/b/__init__.py": "", "a/b/c.py": "", "svc.py": "import a.b.c\n"}
    assert closure("svc", sources) == {"svc.py", "a/__init__.py", "a/b/__init__.py", "a/b/c.py"}


def test_a_star_import_follows_every_direct_submodule() -> None:
    sources = {"svc.py": "from pkg import *\n", "pkg/__init__.py": "", "pkg/one.py": "", "pkg/deep/two.py": ""}
    assert closure("svc", sources) == {"svc.py", "pkg/__init__.py", "pkg/one.py"}


def test_an_import_cycle_terminates() -> None:
    sources = {"a.py": "import b\n", "b.py": "from c import x\n", "c.py": "import a\nx = 1\n"}
    assert closure("a", sources) == {"a.py", "b.py", "c.py"}
    assert closure("c", sources) == {"a.py", "b.py", "c.py"}


def test_an_entry_outside_the_app_or_an_unparsable_module_falls_back_to_everything() -> None:
    sources = {"svc.py": "import broken\n", "broken.py": "def f(:\n", "ok.py": ""}
    assert import_closures({"outside": "lichen.sdk", "svc": "svc", "ok": "ok"}, sources) == {
        "outside": None, "svc": None, "ok": {"ok.py"}}


def test_dynamic_imports_by_string_are_not_seen() -> None:
    sources = {"svc.py": "import importlib\nm = importlib.import_module('plugin')\n", "plugin.py": ""}
    assert closure("svc", sources) == {"svc.py"}


def test_non_python_files_go_with_the_nearest_directory_that_holds_modules() -> None:
    py = ["alpha/__init__.py", "alpha/service.py", "beta/__init__.py", "beta/service.py"]
    other = ["alpha/config.yaml", "alpha/templates/page.txt", "beta/vocab.json", "data/shared.json", "pyproject.toml"]
    alpha = service_files(frozenset({"alpha/__init__.py", "alpha/service.py"}), py, other)
    assert alpha == {"alpha/__init__.py", "alpha/service.py", "alpha/config.yaml", "alpha/templates/page.txt",
                     "data/shared.json", "pyproject.toml"}  # no module above data/ or the root: every service's


def test_with_top_level_modules_root_files_go_with_the_services_importing_one() -> None:
    py = ["alpha.py", "beta.py", "tests/test_alpha.py"]
    other = ["settings.yaml", "tests/fixture.json"]
    assert service_files(frozenset({"alpha.py"}), py, other) == {"alpha.py", "settings.yaml"}
