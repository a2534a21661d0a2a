"""Checks that span more than one field of ``lichen.yaml``.

They run on the raw parsed data (not the validated model) so they report
alongside schema errors; anything malformed is skipped here because the
schema check already reports it.

* the same route (prefix + host + headers) served twice;
* a name used by both a service and a job;
* ``depends_on`` naming an unknown job (for a job) or service (for a service), and cycles in ``depends_on``;
* entrypoints that cannot be imported, and rule files that do not exist
  (only when asked: these read the app's code and files);
* problems inside rule files, through a checker the caller passes in
  (:data:`RuleChecker`): the rule-file format belongs to ``lichen.observe``,
  a layer above this one, so ``lichen validate`` and ``lichen up`` inject
  ``lichen.observe.rule_files.rule_file_issues``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lichen.errors import SpecIssue
from lichen.spec.documents import Document
from lichen.spec.models import ENTRYPOINT_PATTERN

if TYPE_CHECKING:
    from lichen.spec.models import AppSpec


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def cross_field_issues(doc: Document) -> list[SpecIssue]:
    return [*_route_issues(doc), *_name_issues(doc), *_dependency_issues(doc)]


def _route_key(route: Any) -> tuple[str, str | None, tuple[tuple[str, str], ...]] | None:
    if isinstance(route, str):
        return (route, None, ())
    if isinstance(route, dict) and isinstance(route.get("prefix"), str):
        headers = _mapping(route.get("headers"))
        host = route.get("host")
        return (
            route["prefix"],
            host.lower() if isinstance(host, str) else None,
            tuple(sorted((str(k).lower(), str(v)) for k, v in headers.items())),
        )
    return None


def _route_issues(doc: Document) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    owner: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for name, service in _mapping(doc.data.get("services")).items():
        for index, route in enumerate(_list(_mapping(service).get("routes"))):
            key = _route_key(route)
            if key is None:
                continue
            path = ("services", name, "routes", index)
            if key in owner:
                first = owner[key]
                line = doc.position(first)[0]
                what = key[0] + (f" (host {key[1]})" if key[1] else "") + (
                    " with headers " + ", ".join(f"{h}={v}" for h, v in key[2]) if key[2] else ""
                )
                by = f"services.{first[1]}" if first[1] != name else "this service"
                issues.append(doc.issue(path, f"duplicate route {what}: already served by {by} (line {line})"))
            else:
                owner[key] = path
    return issues


def _name_issues(doc: Document) -> list[SpecIssue]:
    services = _mapping(doc.data.get("services"))
    return [
        doc.issue(("jobs", name), f"name {name!r} is also a service; services and jobs need distinct names")
        for name in _mapping(doc.data.get("jobs"))
        if name in services
    ]


def _dependency_issues(doc: Document) -> list[SpecIssue]:
    return [*_section_dependency_issues(doc, "jobs"), *_section_dependency_issues(doc, "services")]


_DEPENDS_ON_MEANS = {"jobs": "names jobs that must finish first", "services": "names services that must be ready first"}


def _section_dependency_issues(doc: Document, section: str) -> list[SpecIssue]:
    """Unknown names and cycles in ``<section>.<name>.depends_on`` (jobs depend on jobs, services on services)."""
    items = _mapping(doc.data.get(section))
    other = "services" if section == "jobs" else "jobs"
    kind, other_kind = section[:-1], other[:-1]
    issues: list[SpecIssue] = []
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, item in items.items():
        edges = graph.setdefault(str(name), [])
        for index, dep in enumerate(_list(_mapping(item).get("depends_on"))):
            if not isinstance(dep, str):
                continue
            if dep in items:
                edges.append((dep, index))
                continue
            close = difflib.get_close_matches(dep, [str(j) for j in items], n=1, cutoff=0.6)
            known = ", ".join(str(j) for j in items)
            hint = f"; did you mean {close[0]!r}?" if close else f"; {section} are: {known}"
            if dep in _mapping(doc.data.get(other)):
                hint = f"; {dep!r} is a {other_kind} ({kind} depends_on {_DEPENDS_ON_MEANS[section]})"
            issues.append(doc.issue((section, name, "depends_on", index), f"unknown {kind} {dep!r}{hint}"))
    for cycle, index in _cycles(graph):
        loop = " -> ".join([*cycle, cycle[0]])
        issues.append(doc.issue((section, cycle[0], "depends_on", index), f"dependency cycle: {loop}"))
    return issues


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[tuple[list[str], int]]:
    """Each elementary cycle found by depth-first search, once, starting at its first job in file order.

    Returns the cycle and the index in its first job's ``depends_on`` of the
    edge that continues the cycle.
    """
    order = {name: i for i, name in enumerate(graph)}
    found: dict[tuple[str, ...], tuple[list[str], int]] = {}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(root: str) -> None:
        # Iterative: a chain of thousands of jobs must not hit Python's recursion limit.
        state[root] = 1
        stack.append(root)
        pending = [iter(graph.get(root, []))]
        while pending:
            step = next(pending[-1], None)
            if step is None:
                pending.pop()
                state[stack.pop()] = 2
                continue
            dep = step[0]
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :]
                start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                cycle = cycle[start:] + cycle[:start]
                nxt = cycle[1] if len(cycle) > 1 else cycle[0]
                index = next(i for d, i in graph[cycle[0]] if d == nxt)
                found.setdefault(tuple(cycle), (cycle, index))
            elif dep not in state:
                state[dep] = 1
                stack.append(dep)
                pending.append(iter(graph.get(dep, [])))

    for name in graph:
        if name not in state:
            visit(name)
    return list(found.values())


# ------------------------------------------------------------- imports


def import_issues(doc: Document, app_dir: Path) -> list[SpecIssue]:
    """Import every entrypoint and look for rule files, relative to ``app_dir``."""
    issues: list[SpecIssue] = []
    for section in ("services", "jobs"):
        for name, item in _mapping(doc.data.get(section)).items():
            entry = _mapping(item).get("entrypoint")
            if isinstance(entry, str) and re.fullmatch(ENTRYPOINT_PATTERN, entry):
                problem = entrypoint_problem(entry, app_dir, callable_needed=section == "jobs")
                if problem:
                    issues.append(doc.issue((section, name, "entrypoint"), problem))
    observability = _mapping(doc.data.get("observability"))
    for index, rule_file in enumerate(_list(observability.get("rules"))):
        if isinstance(rule_file, str) and not (app_dir / rule_file).is_file():
            issues.append(
                doc.issue(("observability", "rules", index), f"rule file not found: {rule_file} (looked in {app_dir})")
            )
    return issues + tls_file_issues(doc, app_dir)


def tls_file_issues(doc: Document, app_dir: Path) -> list[SpecIssue]:
    """``gateway.tls.cert_file`` and ``key_file`` exist and can be read (their contents: checked by the gateway
    at its start, which refuses a bad pair naming the file)."""
    issues: list[SpecIssue] = []
    tls = _mapping(_mapping(doc.data.get("gateway")).get("tls"))
    for field in ("cert_file", "key_file"):
        name = tls.get(field)
        if not isinstance(name, str) or not name:
            continue
        path = Path(name).expanduser()
        path = path if path.is_absolute() else app_dir / path
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            what = "not found" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror})"
            hint = " (make a development pair with 'lichen certs dev')" if isinstance(exc, FileNotFoundError) else ""
            issues.append(doc.issue(("gateway", "tls", field), f"{name} {what}; looked in {app_dir}{hint}"))
    return issues


DataChecker = Callable[[Document, "AppSpec", Path], list[SpecIssue]]
"""``(document, valid spec, app_dir) -> issues``: problems in data the spec names (tables, trace files)."""

RuleChecker = Callable[[Path, str], list[SpecIssue]]
"""``(path, shown_as) -> issues``: every problem of one rule file, located in it (``shown_as`` names the file)."""


def rule_file_issues(doc: Document, app_dir: Path, shown_dir: Path, checker: RuleChecker) -> list[SpecIssue]:
    """Every problem of the rule files ``observability.rules`` names (a missing file is one issue).

    Issues inside a rule file are located in that file, named as
    ``shown_dir / path`` (the spec file's directory as the user wrote it).
    """
    issues: list[SpecIssue] = []
    for index, rule_file in enumerate(_list(_mapping(doc.data.get("observability")).get("rules"))):
        if not isinstance(rule_file, str):
            continue
        path = app_dir / rule_file
        if not path.is_file():
            issues.append(
                doc.issue(("observability", "rules", index), f"rule file not found: {rule_file} (looked in {app_dir})")
            )
            continue
        issues.extend(checker(path, str(shown_dir / rule_file)))
    return issues


def entrypoint_problem(entry: str, app_dir: Path, *, callable_needed: bool = False) -> str | None:
    """Why ``module:attr`` cannot be imported from ``app_dir``, or None when it can.

    The import runs with ``app_dir`` first on ``sys.path``; afterwards
    ``sys.path`` is restored and every module loaded from the app (or under
    the entrypoint's top-level package) is dropped from ``sys.modules``, so
    validation leaves the process as it found it.
    """
    module_name, attr = entry.split(":", 1)
    top = module_name.split(".")[0]
    app_dir = app_dir.resolve()
    saved_path = list(sys.path)
    before = set(sys.modules)
    # A same-named package already imported from elsewhere would shadow the app's.
    shadowed = {n: m for n, m in sys.modules.items() if (n == top or n.startswith(top + ".")) and not _under(m, app_dir)}
    for n in shadowed:
        del sys.modules[n]
    sys.path.insert(0, str(app_dir))
    importlib.invalidate_caches()
    try:
        try:
            # What the app prints while importing goes to stderr: stdout may be `lichen validate --json`.
            with contextlib.redirect_stdout(sys.stderr):
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                return f"cannot import {entry!r}: no module named {missing!r} (looked in {app_dir} and site-packages)"
            return f"cannot import {entry!r}: importing {module_name!r} failed: {exc}"
        except SyntaxError as exc:
            where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
            return f"cannot import {entry!r}: syntax error at {where}: {exc.msg}"
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
            return f"cannot import {entry!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        if not hasattr(module, attr):
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"cannot import {entry!r}: module {module_name!r} has no attribute {attr!r}{hint}"
        target = getattr(module, attr)
        if callable_needed and not callable(target):
            return f"{entry!r} is not callable; a job entrypoint names a function"
        if not callable_needed:
            problem = _service_problem(target)
            if problem:
                return f"{entry!r} {problem}"
        return None
    finally:
        sys.path[:] = saved_path
        for n in set(sys.modules) - before:
            if n == top or n.startswith(top + ".") or _under(sys.modules.get(n), app_dir):
                sys.modules.pop(n, None)
        sys.modules.update(shadowed)
        importlib.invalidate_caches()


# The attribute lichen.sdk's @endpoint sets on a method; the spec layer may not import the SDK.
_ENDPOINT_MARK = "__lichen_endpoint__"


def _service_problem(target: Any) -> str | None:
    """Why ``lichen serve`` could not run ``target`` as a service, or None when it can.

    A service entrypoint is a Service subclass (or instance) with at least one
    ``@endpoint`` method, or an ASGI app: an ``async`` callable.
    """
    owner = target if isinstance(target, type) else type(target)
    has_endpoints = any(hasattr(value, _ENDPOINT_MARK) for k in owner.__mro__ for value in vars(k).values())
    is_service = any(f"{k.__module__}.{k.__qualname__}" == "lichen.sdk.services.Service" for k in owner.__mro__)
    if has_endpoints or (not isinstance(target, type) and _is_async_callable(target)):
        return None
    if is_service:
        return "declares no @endpoint methods, so it would serve nothing"
    if isinstance(target, type):
        return f"is class {target.__qualname__}, not a lichen Service subclass or an ASGI app"
    name = type(target).__name__
    kind = "a function" if inspect.isfunction(target) else f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
    return f"is {kind}, not a lichen Service subclass or an ASGI app (an async callable)"


def _is_async_callable(target: Any) -> bool:
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))


def _under(module: Any, directory: Path) -> bool:
    origin = getattr(module, "__file__", None)
    if not origin:
        return False
    try:
        resolved = Path(origin).resolve()
    except (OSError, ValueError):
        return False
    # Installed packages stay loaded even when a virtualenv sits inside the app.
    if "site-packages" in resolved.parts or resolved.is_relative_to(Path(sys.prefix).resolve()):
        return False
    return resolved.is_relative_to(directory)
