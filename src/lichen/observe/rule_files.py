"""Prometheus rule files: the format, read and checked with every problem located.

What belongs here is the rule-file *format* and the data it parses into, not
evaluation (that is :mod:`lichen.observe.rules`):

* ``load_rule_file(path) -> list[RuleGroup]`` / ``parse_rule_text(text, source) -> list[RuleGroup]``
  — Prometheus' format (``groups: [{name, interval, rules: [{record|alert, expr, for,
  keep_firing_for, labels, annotations}]}]``); the first problem raises :class:`RuleFileError`
  (a :class:`DataError`) naming ``file:line`` and the field.
* ``check_rule_file(path)`` / ``check_rule_text(text, source)`` -> ``(groups, problems)``: every
  problem, not just the first (``lichen rules check``); ``rule_file_issues(path, shown_as)`` gives
  them as spec issues (``lichen validate``).
* :class:`Rule` and :class:`RuleGroup`: one parsed rule and group (with the slots the evaluator keeps
  its state in), and ``parse_duration_s`` for Prometheus durations (also read by promtool test files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser as pp
import yaml

from lichen.control.alerting import Alert, AlertRuleSpec, LabelSet
from lichen.errors import DataError, SpecIssue
from lichen.observe.promql import QueryError, parse_expr
from lichen.observe.templating import TemplateError, compile_template
from lichen.spec.documents import LocatingSafeLoader

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


_PROM_DURATION = re.compile(r"(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?")


def parse_duration_s(text: object, where: str) -> float:
    """A duration in a rule or test file, as Prometheus' model.ParseDuration reads it (absent: 0).

    Units are required ("30" and "" fail, as in promtool), except for a plain 0.
    """
    if text is None:
        return 0.0
    if re.fullmatch(r"0+(ms|s|m|h|d|w|y)?", str(text)):
        return 0.0
    if isinstance(text, bool) or not isinstance(text, str) or not text or not _PROM_DURATION.fullmatch(text):
        raise DataError(f"invalid duration {text!r} (use Prometheus durations like 30s, 5m, 1h)", where=where)
    try:
        return pp.parse_duration(str(text)).total_seconds()
    except ValueError:
        raise DataError(f"invalid duration {text!r} (use Prometheus durations like 30s, 5m, 1h)", where=where) from None


@dataclass
class Rule:
    name: str
    expr: str
    kind: str  # "record" | "alert"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    where: str = ""
    # runtime state
    active: dict[LabelSet, Alert] = field(default_factory=dict)
    written: set[LabelSet] = field(default_factory=set)
    last_error: str | None = None
    last_evaluation_s: float | None = None
    evaluation_time_s: float = 0.0

    @property
    def spec(self) -> AlertRuleSpec:
        return AlertRuleSpec(self.name, self.for_s, self.keep_firing_for_s)


@dataclass
class RuleGroup:
    name: str
    interval_s: float | None
    rules: list[Rule]
    source: str = ""
    limit: int = 0
    last_evaluation_s: float | None = None



# ------------------------------------------------------------------------- loading


class _LineLoader(LocatingSafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = _LocatedDict(loader.construct_mapping(node, deep=True))
    mapping.line, mapping.column = node.start_mark.line + 1, node.start_mark.column + 1
    mapping.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    mapping.key_columns = {str(k.value): k.start_mark.column + 1 for k, _ in node.value
                           if isinstance(k, yaml.ScalarNode)}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _LocatedDict(dict):
    line: int = 0
    column: int = 0
    key_lines: dict[str, int] = {}  # noqa: RUF012 - replaced per instance
    key_columns: dict[str, int] = {}  # noqa: RUF012 - replaced per instance


class RuleFileError(DataError):
    """One problem in a rule file, located: ``file``, ``line`` and ``column`` (0 when unknown) and ``field``.

    ``str()`` reads ``file:line field: message`` (``file:line:column: message`` for YAML syntax).
    """

    def __init__(self, message: str, *, file: str, line: int = 0, column: int = 0, field: str = "",
                 yaml_syntax: bool = False) -> None:
        where = f"{file}:{line}" if line else file
        if yaml_syntax:
            where += f":{column}"
        elif field:
            where += f" {field}"
        super().__init__(message, where=where)
        self.file, self.line, self.column, self.field = file, line, column, field


def _located(message: str, source: str, obj: object, path: str, key: str | None = None) -> RuleFileError:
    """A problem at ``path`` (``groups[0].rules[1].expr``); with ``key``, at that key's line inside ``obj``."""
    line, column = getattr(obj, "line", 0), getattr(obj, "column", 0)
    if key is not None:
        line = getattr(obj, "key_lines", {}).get(key, line)
        column = getattr(obj, "key_columns", {}).get(key, column)
    return RuleFileError(message, file=source, line=line, column=column, field=path)


def _duration(value: object, source: str, obj: object, path: str, key: str) -> float:
    try:
        return parse_duration_s(value, path)
    except DataError as exc:
        raise _located(exc.message, source, obj, path, key=key) from None


def parse_rule_text(text: str, source: str = "<rules>") -> list[RuleGroup]:
    """The groups of a rule file; the first problem raises a :class:`RuleFileError` (see :func:`check_rule_text`)."""
    groups, problems = check_rule_text(text, source)
    if problems:
        raise problems[0]
    return groups


def check_rule_text(text: str, source: str = "<rules>") -> tuple[list[RuleGroup], list[RuleFileError]]:
    """Every problem of a rule file, in file order, and the groups that parsed (use them only when none).

    Each group and each rule is checked on its own, so one bad rule does not
    hide the next; inside a rule, every independent check reports (a bad
    ``expr`` and a bad ``for`` both show). A YAML syntax error or a file
    without ``groups:`` is the one problem reported.
    """
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:  # PyYAML builds nested collections recursively
        return [], [RuleFileError("invalid YAML: nested too deep", file=source)]
    except yaml.reader.ReaderError as exc:  # a control character: located by its offset in the text
        at = min(max(exc.position, 0), len(text))
        line, column = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        return [], [RuleFileError(f"invalid YAML: {exc.reason} (U+{exc.character:04X})", file=source, line=line,
                                  column=column, yaml_syntax=True)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
        if mark is None:
            return [], [RuleFileError(message, file=source)]
        return [], [RuleFileError(message, file=source, line=mark.line + 1, column=mark.column + 1, yaml_syntax=True)]
    if doc is None:
        return [], []
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        return [], [RuleFileError("a rule file needs a top-level 'groups:' list", file=source, line=0)]
    problems: list[RuleFileError] = []
    unknown = _sorted_keys(set(doc) - {"groups"})
    if unknown:
        problems.append(_located(f"unknown field(s) {unknown}", source, doc, "", key=unknown[0]))
    groups: list[RuleGroup] = []
    names: set[str] = set()
    for gi, g in enumerate(doc["groups"]):
        group = _parse_group(g, source, f"groups[{gi}]", names, problems)
        if group is not None:
            groups.append(group)
    return groups, sorted(problems, key=lambda e: (e.line, e.column))


def _parse_group(g: object, source: str, gpath: str, names: set[str], problems: list[RuleFileError]) -> RuleGroup | None:
    if not isinstance(g, dict) or not g.get("name"):
        problems.append(_located("each group needs a 'name'", source, g, gpath))
        if not isinstance(g, dict):
            return None
    name = str(g.get("name") or "")
    ok = bool(name)
    extra = _sorted_keys(set(g) - {"name", "interval", "rules", "limit", "query_offset"})
    if extra:
        problems.append(_located(f"unknown field(s) {extra} in group {g.get('name')!r}", source, g, gpath,
                                 key=extra[0]))
        ok = False
    limit = g.get("limit") or 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        problems.append(_located(f"'limit' must be a whole number >= 0, got {limit!r}", source, g, gpath + ".limit",
                                 key="limit"))
        ok, limit = False, 0
    rule_list = g.get("rules") or []
    if not isinstance(rule_list, list):
        problems.append(_located("'rules' must be a list of rules", source, g, gpath + ".rules", key="rules"))
        ok, rule_list = False, []
    if name and name in names:
        problems.append(_located(f"{g['name']!r}: repeated in the same file", source, g, gpath + ".name"))
        ok = False
    names.add(name)
    interval = None
    try:
        interval = _duration(g.get("interval"), source, g, gpath + ".interval", "interval") or None
    except RuleFileError as exc:
        problems.append(exc)
        ok = False
    rules = []
    for ri, r in enumerate(rule_list):
        rule_problems: list[RuleFileError] = []
        rule = _parse_rule(r, source, f"{gpath}.rules[{ri}]", rule_problems)
        problems.extend(rule_problems)
        if rule is None or rule_problems:
            ok = False
        else:
            rules.append(rule)
    return RuleGroup(name, interval, rules, source, limit) if ok else None


def _sorted_keys(keys: set[object]) -> list[str]:
    """Mapping keys as text, sorted (YAML keys may be numbers or booleans, which do not sort with strings)."""
    return sorted(str(k) for k in keys)


def _string_map(r: dict, key: str, source: str, path: str, problems: list[RuleFileError]) -> dict[str, str]:
    """A rule's ``labels`` or ``annotations``: a mapping of names to scalar values, read as text."""
    value = r.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(_located(f"'{key}' must be a mapping of names to text", source, r, f"{path}.{key}", key=key))
        return {}
    out = {}
    for name, text in value.items():
        if isinstance(text, (dict, list)):
            problems.append(_located(f"the value of {name!r} in '{key}' must be text, not a "
                                     f"{'mapping' if isinstance(text, dict) else 'list'}", source, value,
                                     f"{path}.{key}.{name}", key=str(name)))
            continue
        out[str(name)] = "" if text is None else str(text)
    return out


def _parse_rule(r: object, source: str, path: str, problems: list[RuleFileError]) -> Rule | None:
    """The rule at ``path``, or None; each independent problem is appended to ``problems``."""
    if not isinstance(r, dict):
        problems.append(_located("a rule must be a mapping", source, r, path))
        return None
    allowed = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    extra = _sorted_keys(set(r) - allowed)
    if extra:
        first = min(extra, key=lambda k: getattr(r, "key_lines", {}).get(k, 0))
        problems.append(_located(f"unknown field(s) {extra}", source, r, f"{path}.{first}", key=first))
    if ("record" in r) == ("alert" in r):
        problems.append(_located("one of 'record' or 'alert' must be set", source, r, path))
    expr = r.get("expr")
    if expr is None or str(expr).strip() == "":
        problems.append(_located("field 'expr' must be set", source, r, path))
    else:
        try:
            parse_expr(str(expr))
        except QueryError as exc:
            problems.append(_located(exc.message, source, r, path + ".expr", key="expr"))
    labels = _string_map(r, "labels", source, path, problems)
    annotations = _string_map(r, "annotations", source, path, problems)
    for field_name, names in (("labels", labels), ("annotations", annotations)):
        for name in names:  # Prometheus' rulefmt: a valid label name, and a rule label may not be __name__
            if not LABEL_NAME.match(name) or (field_name == "labels" and name == "__name__"):
                kind = "label" if field_name == "labels" else "annotation"
                problems.append(_located(f"invalid {kind} name {name!r}", source, r.get(field_name),
                                         f"{path}.{field_name}.{name}", key=name))
    if ("record" in r) == ("alert" in r):
        return None
    if "record" in r:
        name = str(r["record"])
        if not METRIC_NAME.match(name):
            problems.append(_located(f"invalid recording rule name {name!r}", source, r, path + ".record", key="record"))
        for f in ("for", "keep_firing_for", "annotations"):
            if f in r:
                problems.append(_located(f"invalid field {f!r} in recording rule", source, r, path))
        if problems:
            return None
        return Rule(name, str(expr), "record", labels=labels, where=str(_located("", source, r, path).where))
    name = str(r["alert"])
    if not METRIC_NAME.match(name):
        problems.append(_located(f"invalid alert name {name!r}", source, r, path + ".alert", key="alert"))
    for key, text in list(labels.items()) + list(annotations.items()):
        try:
            compile_template(text)
        except TemplateError as exc:
            mapping = r.get("labels") if key in labels and labels[key] == text else r.get("annotations")
            problems.append(_located(f"template of {key!r}: {exc.message}", source, mapping, path, key=key))
    durations = {}
    for f in ("for", "keep_firing_for"):
        try:
            durations[f] = _duration(r.get(f), source, r, f"{path}.{f}", f)
        except RuleFileError as exc:
            problems.append(exc)
    if problems:
        return None
    return Rule(
        name,
        str(expr),
        "alert",
        labels=labels,
        annotations=annotations,
        for_s=durations["for"],
        keep_firing_for_s=durations["keep_firing_for"],
        where=str(_located("", source, r, path).where),
    )


def load_rule_file(path: str | Path) -> list[RuleGroup]:
    """The groups of one rule file; its first problem raises a :class:`RuleFileError`."""
    groups, problems = check_rule_file(path)
    if problems:
        raise problems[0]
    return groups


def check_rule_file(path: str | Path, shown_as: str | None = None) -> tuple[list[RuleGroup], list[RuleFileError]]:
    """:func:`check_rule_text` of a file (named ``shown_as`` in problems, default its path)."""
    p = Path(path)
    source = shown_as or str(p)
    try:
        text = p.read_text()
    except OSError as exc:
        return [], [RuleFileError(f"cannot read rule file: {exc.strerror}", file=source)]
    except UnicodeDecodeError as exc:
        return [], [RuleFileError(f"not UTF-8 text ({exc.reason}); save the file as UTF-8", file=source)]
    return check_rule_text(text, source)


def rule_file_issues(path: Path, shown_as: str) -> list[SpecIssue]:
    """Every problem of a rule file as :class:`~lichen.errors.SpecIssue` (what ``lichen validate`` prints).

    The checker ``lichen.spec.loading.check_spec(..., rule_checker=...)`` takes:
    the spec layer cannot import this module, so the CLI passes it in.
    """
    _, problems = check_rule_file(path, shown_as)
    return [SpecIssue(e.file, max(e.line, 1), max(e.column, 1), e.field, e.message) for e in problems]
