"""Read ``lichen.yaml`` into an :class:`AppSpec`, locating every problem at file:line:column.

The YAML is parsed into a :class:`~lichen.spec.documents.Document`, which keeps
where each key and value is written; the plain data then goes through the
pydantic models, and each pydantic error is mapped back to where it came from
and rewritten as a message saying what was expected. Cross-field checks (duplicate routes,
``depends_on``, entrypoint imports) live in :mod:`lichen.spec.checking`.

Every problem is reported, not just the first: ``validate_spec`` returns the
whole list and ``load_spec`` raises one :class:`SpecError` carrying it.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lichen.errors import ConfigError, SpecError, SpecIssue
from lichen.spec import checking
from lichen.spec.documents import Document, PathKey, parse_document
from lichen.spec.models import AppSpec

# --------------------------------------------------------- pydantic errors


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation allows (Optional/Union/Annotated removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def model_at(path: PathKey, root: type[BaseModel] = AppSpec) -> type[BaseModel] | None:
    """The pydantic model that describes the mapping at ``path``, if any."""
    candidates: list[Any] = [root]
    for part in path:
        following: list[Any] = []
        for candidate in candidates:
            origin = typing.get_origin(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                info = candidate.model_fields.get(str(part))
                if info is not None:
                    following.extend(_unwrap(info.annotation))
            elif origin is dict:
                following.extend(_unwrap(typing.get_args(candidate)[1]))
            elif origin is list and isinstance(part, int):
                following.extend(_unwrap(typing.get_args(candidate)[0]))
        candidates = following
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _lookup(container: Any, part: Any) -> tuple[bool, Any]:
    if isinstance(container, dict):
        for key in (part, str(part)):
            if key in container:
                return True, container[key]
        for key in container:
            if str(key) == str(part):
                return True, container[key]
    if isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container):
        return True, container[part]
    return False, None


def _data_path(loc: tuple[Any, ...], data: Any, root: type[BaseModel] = AppSpec) -> tuple[PathKey, bool, bool]:
    """Turn a pydantic ``loc`` into a data path.

    Returns (path, at_key, via_union): ``at_key`` when the error is about a
    mapping key itself; ``via_union`` when union branch tags were dropped.
    """
    path: list[Any] = []
    node, present, via_union = data, True, False
    for part in loc:
        if part == "[key]":
            return tuple(path), True, via_union
        if present:
            found, child = _lookup(node, part)
            if found:
                real = next((k for k in node if str(k) == str(part)), part) if isinstance(node, dict) else part
                path.append(real)
                node = child
                continue
        model = model_at(tuple(path), root)
        if isinstance(part, str) and model is not None and part in model.model_fields:
            path.append(part)  # a field that is absent from the file
            present = False
        elif isinstance(part, int) and not present:
            path.append(part)
        else:
            via_union = True  # a union branch tag such as 'constrained-int'
    return tuple(path), False, via_union


_PATTERN_WORDS = {
    r"^[a-z]([-a-z0-9]*[a-z0-9])?$": "a lowercase name of letters, digits and '-' that starts with a letter "
    "and does not end with '-' (e.g. recommender)",
    r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$": "'module.path:Name' (e.g. app.services:Recommender)",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name of letters, digits and '_' that does not start "
    "with a digit (e.g. MODEL_DIR)",
    r"^\d{1,3}%$": "a percentage such as '25%'",
    r"^/[^\s?#]*$": "a URL path that starts with '/', without spaces, '?' or '#' (e.g. /v1/items)",
    r"^https?://": "an http:// or https:// URL",
    r"^sqlite:///.+": "a SQLite URL such as sqlite:///.lichen/state.db",
}

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "finite_number": "a finite number",
}


def show(value: Any) -> str:
    """A value as a user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _expectation(err: dict[str, Any]) -> str:
    """What a pydantic error says was expected, as a noun phrase."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(ctx.get("pattern", ""), f"a string matching {ctx.get('pattern')}")
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        value = next(iter(ctx.values()), "?")
        return f"a number {bounds[kind]} {value}"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "string_too_long":
        return f"a name of at most {ctx.get('max_length')} characters"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"][:1].lower() + err["msg"][1:]


def _phrase(annotation: Any) -> str | None:
    """A noun phrase for one member of a union, e.g. ``an integer >= 0``."""
    base, constraints = annotation, []
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            constraints.extend(getattr(item, "metadata", None) or [item])
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
             list: "a list"}
    base = typing.get_origin(base) or base
    if base not in words:
        return None
    phrase = words[base]
    for item in constraints:
        pattern = getattr(item, "pattern", None)
        if pattern:
            return _PATTERN_WORDS.get(pattern, f"a string matching {pattern}")
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                phrase += f" {sign} {getattr(item, attr)}"
    return phrase


def _union_expectations(path: PathKey, root: type[BaseModel] = AppSpec) -> list[str]:
    model = model_at(path[:-1], root) if path else None
    info = model.model_fields.get(str(path[-1])) if model else None
    if info is None:
        return []
    phrases = [_phrase(member) for member in typing.get_args(info.annotation)]
    return [p for p in phrases if p] if all(phrases) else []


def _message(err: dict[str, Any], path: PathKey, root: type[BaseModel] = AppSpec) -> tuple[PathKey, str]:
    """One pydantic error as (path, message); ``root``: the model the document is checked against."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        model = model_at(path[:-1], root) if path else None
        info = model.model_fields.get(str(path[-1])) if model else None
        phrase = None
        if info is not None:
            phrase = _phrase(typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
        return path, "required key is missing" + (f": expected {phrase}" if phrase else "")
    if kind == "extra_forbidden":
        key = str(path[-1])
        model = model_at(path[:-1], root)
        names = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(names)}"
        return path, f"unknown key {key!r}; {hint}"
    if kind == "value_error":
        text = str(ctx.get("error", err["msg"]))
        match = re.match(r"^([a-z_]+(?:\.[a-z_]+)*): (.*)$", text, re.S)
        if match:
            nested = tuple(match.group(1).split("."))
            parent = model_at((*path, *nested[:-1]), root)
            if parent is not None and nested[-1] in parent.model_fields:
                return (*path, *nested), match.group(2)
        return path, text
    if kind == "literal_error":
        close = difflib.get_close_matches(str(value), re.findall(r"'([^']*)'", str(ctx.get("expected"))), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return path, f"expected one of {ctx.get('expected')}, got {show(value)}{hint}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        return path, f"must be {bounds[kind]} {next(iter(ctx.values()), '?')}, got {show(value)}"
    if kind == "string_too_long":
        return path, f"must be at most {ctx.get('max_length')} characters, got {len(str(value))}"
    if kind in ("too_short", "string_too_short"):
        return path, f"must have at least {ctx.get('min_length')} item(s)"
    return path, f"expected {_expectation(err)}, got {show(value)}"


def schema_issues(doc: Document, exc: ValidationError, root: type[BaseModel] = AppSpec) -> list[SpecIssue]:
    """Every pydantic error as a located issue; union branches merge into one. ``root``: the model validated
    (``lichen.yaml``'s by default; chaos experiments use their own)."""
    issues: list[SpecIssue] = []
    unions: dict[PathKey, list[dict[str, Any]]] = {}
    for err in exc.errors():
        path, at_key, via_union = _data_path(err["loc"], doc.data, root)
        if at_key:
            issues.append(doc.issue(path, f"invalid key {show(path[-1])}: expected {_expectation(err)}"))
        elif via_union:
            unions.setdefault(path, []).append(err)
        else:
            where, message = _message(err, path, root)
            issues.append(doc.issue(where, message))
    for path, errs in unions.items():
        wanted = _union_expectations(path, root) or list(dict.fromkeys(_expectation(e) for e in errs))
        issues.append(doc.issue(path, f"expected {' or '.join(wanted)}, got {show(errs[0].get('input'))}"))
    return issues


# -------------------------------------------------------------- the API


def _read(path: Path) -> str | SpecIssue:
    """The file's text; an encoding problem is an issue in the file, a missing file a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no spec file at {path} (create one with 'lichen init')") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; pass the path of its lichen.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return SpecIssue(str(path), 1, 1, "", "the file is UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line, column = before.count(b"\n") + 1, len(before.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")) + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x}: {exc.reason}); save the file as UTF-8"
        return SpecIssue(str(path), line, column, "", message)


def check_spec(
    path: str | Path, *, check_imports: bool = True, rule_checker: checking.RuleChecker | None = None,
    data_checker: checking.DataChecker | None = None,
) -> tuple[AppSpec | None, list[SpecIssue]]:
    """Parse, validate and cross-check one spec file; the model is None when any issue was found.

    With ``rule_checker`` (``lichen.observe.rule_files.rule_file_issues``) every
    rule file the spec names is checked too; its issues are located in that
    file and listed after the spec's own. With ``data_checker``
    (``lichen.green.intensity_sources.sustainability_issues``) the data files and
    tables the spec names are checked (run only on a spec that is otherwise valid).
    """
    spec_path = Path(path)
    text = _read(spec_path)
    if isinstance(text, SpecIssue):
        return None, [text]
    doc, issues = parse_document(text, str(path))
    if doc is None:
        return None, issues
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else show(doc.data)
        issues.append(doc.issue((), f"expected a mapping with at least 'app: NAME' at the top level, got {got}"))
        return None, issues
    spec: AppSpec | None = None
    try:
        spec = AppSpec.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(schema_issues(doc, exc))
    issues.extend(checking.cross_field_issues(doc))
    if check_imports:
        issues.extend(checking.import_issues(doc, spec_path.resolve().parent))
    if rule_checker is not None:
        issues.extend(checking.rule_file_issues(doc, spec_path.resolve().parent, spec_path.parent, rule_checker))
    if data_checker is not None and spec is not None and not issues:  # its warnings: data_warnings' callers
        issues.extend(i for i in data_checker(doc, spec, spec_path.resolve().parent) if i.severity != "warning")
    issues = sorted(set(issues), key=lambda i: (i.file != str(path), i.file, i.line, i.column, i.field, i.message))
    return (None if issues else spec), issues


def validate_spec(
    path: str | Path, check_imports: bool = True, rule_checker: checking.RuleChecker | None = None
) -> list[SpecIssue]:
    """Every problem in a spec file, sorted by position; empty when the spec is valid.

    With ``check_imports`` each entrypoint is imported (with the spec's
    directory on ``sys.path``, restored afterwards) and referenced rule files
    must exist; with ``rule_checker`` their contents are checked too.
    """
    return check_spec(path, check_imports=check_imports, rule_checker=rule_checker)[1]


def load_spec(
    path: str | Path, *, check_imports: bool = False, rule_checker: checking.RuleChecker | None = None,
    data_checker: checking.DataChecker | None = None,
) -> AppSpec:
    """Load and validate ``lichen.yaml``; raise :class:`SpecError` listing every problem.

    Example::

        spec = load_spec("lichen.yaml")
        spec.services["recommender"].replicas
    """
    spec, issues = check_spec(path, check_imports=check_imports, rule_checker=rule_checker, data_checker=data_checker)
    if issues or spec is None:
        raise SpecError(issues)
    return spec
