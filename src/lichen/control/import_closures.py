"""Which of an app's files a service runs: the static import closure of its entrypoint module.

A service's revision digests only these files, so editing one service's
module rolls that service and the services that import it, not every
service (``lichen.runtime.digesting`` reads the files; this module decides
over their paths and bytes). Everything here is a function of plain data:
relative POSIX paths (``recsys/services.py``) and source bytes.

The approximation, as docs/control-plane.md states it for users:

* Modules resolve against the app directory only (``lichen serve
  --app-dir`` puts it first on ``sys.path``): ``a/b.py`` is ``a.b``,
  ``a/__init__.py`` is ``a``; a directory without ``__init__.py`` is a
  namespace package. A name that resolves to no such file (the standard
  library, site-packages) is not followed, so a change there is not seen.
* Every ``import`` and ``from ... import`` statement anywhere in a module
  counts, including those inside functions, ``try`` blocks and ``if
  TYPE_CHECKING:``; relative imports resolve as Python resolves them;
  ``from pkg import name`` follows ``pkg.name`` when that is a module;
  ``from pkg import *`` follows every direct submodule of ``pkg``; reaching
  ``a.b.c`` also reaches the ``a`` and ``a.b`` package ``__init__`` files
  Python runs first. Imports by string (``importlib.import_module``,
  ``__import__``) are not seen.
* A non-Python file belongs to the nearest directory at or above it that
  holds a Python module of the app, and counts for each service whose
  closure has a module in that directory; a file with no such directory
  above it counts for every service.
* When the entrypoint module is not a file of the app, or a module the
  walk reaches does not parse, the service falls back to every file, as
  before closures.
"""

from __future__ import annotations

import ast
import functools
import posixpath
from collections.abc import Iterable, Mapping
from importlib.util import resolve_name

_STAR = ".*"
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")  # where a statement holds statements


def module_index(py_paths: Iterable[str]) -> dict[str, str]:
    """Module name -> relative path, for the ``.py`` files of an app (names that cannot be imported are left out)."""
    index: dict[str, str] = {}
    for path in sorted(py_paths):
        parts = path[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(part.isidentifier() for part in parts):
            index[".".join(parts)] = path
    return index


@functools.lru_cache(maxsize=4096)
def imported_names(source: bytes | str, module: str, is_package: bool) -> frozenset[str] | None:
    """The absolute module names a module's import statements may load; None when it does not parse.

    ``from x import y`` yields ``x`` and ``x.y`` (``y`` may be a submodule);
    ``from x import *`` yields ``x`` and ``x.*``. Parsing is most of the cost
    of a digest, so results are kept by source: a long-lived controller
    re-parses only the modules that changed since its last ``lichen up``.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return None
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    statements: list[ast.AST] = list(tree.body)
    while statements:  # imports are statements: walk statement bodies only, never into expressions
        node = statements.pop()
        for field in _BODIES:
            statements.extend(getattr(node, field, ()))
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                try:
                    base = resolve_name("." * node.level + (node.module or ""), package)
                except (ImportError, ValueError):  # beyond the top-level package: fails at import, nothing to follow
                    continue
            else:
                base = node.module or ""
            names.add(base)
            names.update(base + (_STAR if alias.name == "*" else "." + alias.name) for alias in node.names)
    return frozenset(names)


def import_closures(entry_modules: Mapping[str, str],
                    sources: Mapping[str, bytes | str]) -> dict[str, frozenset[str] | None]:
    """Per service, the relative paths of the app modules its entry module reaches; None means "fall back to all".

    ``entry_modules`` maps a service to its entrypoint's module (``recsys.services``);
    ``sources`` maps every ``.py`` file of the app (relative path) to its source.
    Each module is parsed once however many services reach it; cycles terminate.
    """
    index = module_index(sources)
    parsed: dict[str, frozenset[str] | None] = {}

    def imports_of(name: str) -> frozenset[str] | None:
        if name not in parsed:
            path = index[name]
            parsed[name] = imported_names(sources[path], name, path.endswith("/__init__.py"))
        return parsed[name]

    result: dict[str, frozenset[str] | None] = {}
    for service, entry in entry_modules.items():
        if entry not in index:
            result[service] = None
            continue
        reached: set[str] = set()
        pending = [entry]
        broken = False
        while pending and not broken:
            for name in _expand(pending.pop(), index):
                if name in reached:
                    continue
                reached.add(name)
                found = imports_of(name)
                if found is None:
                    broken = True
                    break
                pending.extend(found)
        result[service] = None if broken else frozenset(index[name] for name in reached)
    return result


def _expand(name: str, index: Mapping[str, str]) -> list[str]:
    """The app modules that importing ``name`` runs: its parent packages, itself (``pkg.*``: also the submodules)."""
    if name.endswith(_STAR):
        package = name[: -len(_STAR)]
        prefix = package + "."
        names = [m for m in index if m.startswith(prefix) and "." not in m[len(prefix):]]
        name = package
    else:
        names = []
    parts = name.split(".")
    names.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return [m for m in names if m in index]


def service_files(closure: frozenset[str], py_paths: Iterable[str], other_paths: Iterable[str]) -> frozenset[str]:
    """The closure's modules plus the non-Python files that go with them (see the module docs)."""
    module_dirs = {posixpath.dirname(p) for p in py_paths}
    closure_dirs = {posixpath.dirname(p) for p in closure}
    chosen = set(closure)
    for path in other_paths:
        owner = _owning_dir(posixpath.dirname(path), module_dirs)
        if owner is None or owner in closure_dirs:
            chosen.add(path)
    return frozenset(chosen)


def _owning_dir(directory: str, module_dirs: set[str]) -> str | None:
    while True:
        if directory in module_dirs:
            return directory
        if not directory:
            return None
        directory = posixpath.dirname(directory)
