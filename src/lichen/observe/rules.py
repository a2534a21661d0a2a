"""Prometheus rule files: loading, checking, and evaluating recording and alerting rules.

Interface (stable; used by the controller, the notifier, the dashboard and ``lichen rules``):

* ``load_rule_file(path) -> list[RuleGroup]`` / ``parse_rule_text(text, source) -> list[RuleGroup]``
  — Prometheus' format (``groups: [{name, interval, rules: [{record|alert, expr, for,
  keep_firing_for, labels, annotations}]}]``); the first problem raises :class:`RuleFileError`
  (a :class:`DataError`) naming ``file:line`` and the field.
* ``check_rule_file(path)`` / ``check_rule_text(text, source)`` -> ``(groups, problems)``: every
  problem, not just the first (``lichen rules check``); ``rule_file_issues(path, shown_as)`` gives
  them as spec issues (``lichen validate``).
* ``RuleManager(store, engine, external_labels=None, default_interval_s=60.0, external_url="")``
  * ``.add_groups(groups)`` / ``.load_files(paths)`` / ``.load_text(text, source)``
  * ``.replace_groups(groups, now_s) -> RulesReload`` — a reload as Prometheus does it: unchanged
    groups keep their state, changed ones keep the alerts of rules with the same name and labels.
  * ``.evaluate_due(now_s) -> int`` — evaluate every group whose interval has elapsed (the first
    call evaluates all); returns how many groups ran. ``now_s`` is Unix seconds (sample time).
  * ``.evaluate_group(group, now_s)`` — one evaluation at ``now_s`` (promtool's harness uses it).
  * ``.alerts() -> list[AlertView]`` — pending and firing alerts (``state``, ``labels``,
    ``annotations``, ``active_at_s``, ``value``, ``fired_at_s``) plus alerts resolved within the last
    15 minutes with ``state == "inactive"`` and ``resolved_at_s`` (for "resolved" notifications).
  * ``.rules_status() -> dict`` — the ``data`` of Prometheus' ``/api/v1/rules``.

Recording rules write their result under the ``record`` name with the rule's labels; alerting
rules write ``ALERTS{alertstate=...}`` and ``ALERTS_FOR_STATE``. A series a rule wrote at its
previous evaluation but not at this one gets a stale marker, as in Prometheus.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser as pp
import yaml

from lichen.control.alerting import (
    FIRING,
    INACTIVE,
    Alert,
    AlertResult,
    AlertRuleSpec,
    DuplicateAlertError,
    LabelSet,
    step_alerts,
)
from lichen.errors import DataError, SpecIssue
from lichen.observe.promql import Engine, QueryError, parse_expr
from lichen.observe.series import SeriesStore, labels_key
from lichen.observe.templating import TemplateError, compile_template

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


# How far (as a share of the interval) a tick may come early or late and still
# evaluate its own slot on the group's grid; see RuleManager.evaluate_due.
SLOT_TOLERANCE = 0.1


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


@dataclass(frozen=True)
class AlertView:
    rule: str
    group: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    active_at_s: float
    value: float
    fired_at_s: float | None
    resolved_at_s: float | None

    def to_json(self) -> dict:
        from datetime import UTC, datetime

        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "state": self.state,
            "activeAt": datetime.fromtimestamp(self.active_at_s, UTC).isoformat().replace("+00:00", "Z"),
            "value": format_go_float(self.value),  # Prometheus' API: strconv.FormatFloat(v, 'e', -1, 64)
        }


def format_go_float(v: float, upper: bool = False) -> str:
    """Go's ``strconv.FormatFloat(v, 'e', -1, 64)`` (``'E'`` with ``upper``): the shortest
    exponent form that reads back as ``v``, as Prometheus' API and promtool print values."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    letter = "E" if upper else "e"
    for digits in range(17):
        text = f"{v:.{digits}{letter}}"
        if float(text) == v:
            return text
    return f"{v:.17{letter}}"


def _rfc3339(epoch_s: float | None) -> str:
    from datetime import UTC, datetime

    if epoch_s is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
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
    unknown = set(doc) - {"groups"}
    if unknown:
        problems.append(_located(f"unknown field(s) {sorted(unknown)}", source, doc, "", key=sorted(unknown)[0]))
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
    extra = set(g) - {"name", "interval", "rules", "limit", "query_offset"}
    if extra:
        problems.append(_located(f"unknown field(s) {sorted(extra)} in group {g.get('name')!r}", source, g, gpath,
                                 key=sorted(extra)[0]))
        ok = False
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
    for ri, r in enumerate(g.get("rules") or []):
        rule_problems: list[RuleFileError] = []
        rule = _parse_rule(r, source, f"{gpath}.rules[{ri}]", rule_problems)
        problems.extend(rule_problems)
        if rule is None or rule_problems:
            ok = False
        else:
            rules.append(rule)
    return RuleGroup(name, interval, rules, source, int(g.get("limit") or 0)) if ok else None


def _parse_rule(r: object, source: str, path: str, problems: list[RuleFileError]) -> Rule | None:
    """The rule at ``path``, or None; each independent problem is appended to ``problems``."""
    if not isinstance(r, dict):
        problems.append(_located("a rule must be a mapping", source, r, path))
        return None
    allowed = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    extra = set(r) - allowed
    if extra:
        first = min(extra, key=lambda k: getattr(r, "key_lines", {}).get(k, 0))
        problems.append(_located(f"unknown field(s) {sorted(extra)}", source, r, f"{path}.{first}", key=first))
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
    labels = {str(k): str(v) for k, v in (r.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (r.get("annotations") or {}).items()}
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


# ------------------------------------------------------------------------ reload


def rule_definition(rule: Rule) -> tuple:
    """What a rule says (not its state): two rules with equal definitions evaluate alike."""
    return (rule.kind, rule.name, rule.expr, tuple(sorted(rule.labels.items())),
            tuple(sorted(rule.annotations.items())), rule.for_s, rule.keep_firing_for_s)


def group_definition(group: RuleGroup) -> tuple:
    return (group.source, group.name, group.interval_s, group.limit, tuple(rule_definition(r) for r in group.rules))


@dataclass(frozen=True)
class RulesReload:
    """What :meth:`RuleManager.replace_groups` did, by group (``(source, name)`` pairs)."""

    added: tuple[tuple[str, str], ...] = ()
    changed: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    unchanged: tuple[tuple[str, str], ...] = ()

    @property
    def applied(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def plan_reload(old: Iterable[RuleGroup], new: Iterable[RuleGroup]) -> list[tuple[RuleGroup, RuleGroup | None, str]]:
    """Prometheus' rule reload, decided: for each new group, the old group it replaces and what happens.

    A group is known by its file and name. ``"unchanged"``: the definitions are
    equal, so the *old* group object stays (alert state, ``for`` timers and
    evaluation grid untouched). ``"changed"``: the new group takes over the
    state of old rules with the same name and labels (Prometheus'
    ``Group.CopyState``). ``"added"``: no old group. Old groups not paired are
    removed; they come last, with ``"removed"`` and themselves as the first item.
    """
    by_key = {(g.source, g.name): g for g in old}
    plan: list[tuple[RuleGroup, RuleGroup | None, str]] = []
    for group in new:
        before = by_key.pop((group.source, group.name), None)
        if before is None:
            plan.append((group, None, "added"))
        elif group_definition(before) == group_definition(group):
            plan.append((before, before, "unchanged"))
        else:
            plan.append((group, before, "changed"))
    plan.extend((gone, gone, "removed") for gone in by_key.values())
    return plan


def copy_state(old: RuleGroup, new: RuleGroup) -> list[LabelSet]:
    """Carry ``old``'s state into ``new`` (Prometheus' ``Group.CopyState``); the series only old rules wrote.

    Rules are matched by name and labels, in order when repeated: a matched
    alerting rule keeps its pending and firing alerts (so ``for`` keeps
    counting), and every matched rule remembers the series it wrote, so they
    get stale markers when the new rule stops writing them.
    """
    new.last_evaluation_s = old.last_evaluation_s
    pool: dict[tuple, list[Rule]] = {}
    for rule in old.rules:
        pool.setdefault((rule.name, tuple(sorted(rule.labels.items()))), []).append(rule)
    for rule in new.rules:
        candidates = pool.get((rule.name, tuple(sorted(rule.labels.items()))))
        if not candidates:
            continue
        before = candidates.pop(0)
        rule.written = set(before.written)
        if rule.kind == before.kind == "alert":
            rule.active = dict(before.active)
    return [labels for rules in pool.values() for rule in rules for labels in rule.written]


# ---------------------------------------------------------------------- evaluation


class RuleManager:
    """Evaluates rule groups against a store and keeps the alert state between evaluations."""

    def __init__(
        self,
        store: SeriesStore,
        engine: Engine | None = None,
        external_labels: dict[str, str] | None = None,
        default_interval_s: float = 60.0,
        external_url: str = "",
    ) -> None:
        self.store = store
        self.external_url = external_url  # $externalURL in templates
        self.engine = engine or Engine(store)
        self.external_labels = dict(external_labels or {})
        self.default_interval_s = default_interval_s
        self.groups: list[RuleGroup] = []
        #: on a rule's first evaluation, restore activeAt from ALERTS_FOR_STATE (kept in a restored store)
        self.restore_for_state = True
        self.outage_tolerance_s = 3600.0
        self._lock = threading.Lock()  # an evaluation (in a worker thread) and a reload never interleave

    def add_groups(self, groups: Iterable[RuleGroup]) -> None:
        self.groups.extend(groups)

    def load_files(self, paths: Iterable[str | Path]) -> None:
        for p in paths:
            self.add_groups(load_rule_file(p))

    def load_text(self, text: str, source: str = "<rules>") -> None:
        self.add_groups(parse_rule_text(text, source))

    def interval_of(self, group: RuleGroup) -> float:
        return group.interval_s or self.default_interval_s

    def replace_groups(self, groups: Iterable[RuleGroup], now_s: float) -> RulesReload:
        """Swap in a new set of groups as Prometheus reloads rule files (:func:`plan_reload`).

        Unchanged groups keep their objects and so all their state; changed
        groups take over the alert state of rules with the same name and
        labels; series that removed rules wrote get stale markers at ``now_s``.
        Waits for an evaluation in progress, so a reload never lands mid-round.
        """
        with self._lock:
            plan = plan_reload(self.groups, list(groups))
            kept: list[RuleGroup] = []
            stale: list[LabelSet] = []
            seen: dict[str, list[tuple[str, str]]] = {"added": [], "changed": [], "removed": [], "unchanged": []}
            for group, before, kind in plan:
                seen[kind].append((group.source, group.name))
                if kind == "removed":
                    stale.extend(labels for rule in group.rules for labels in rule.written)
                    continue
                if kind == "changed" and before is not None:
                    stale.extend(copy_state(before, group))
                kept.append(group)
            t_ms = int(round(now_s * 1000))
            for labels in stale:
                self.store.mark_stale(labels, t_ms)
            self.groups = kept
        return RulesReload(**{k: tuple(v) for k, v in seen.items()})

    def evaluate_due(self, now_s: float) -> int:
        """Evaluate each group whose next slot has come; returns how many ran.

        Evaluation times stay on each group's grid (``first + k * interval``),
        as Prometheus keeps them: a tick that wakes a little early or late
        (within :data:`SLOT_TOLERANCE` of the interval) evaluates the slot it
        was meant for. Otherwise scheduling jitter would skip a whole
        interval, or make ``now - active_at`` fall just short of ``for``, and
        stretch every alert by one interval.
        """
        with self._lock:
            return self._evaluate_due(now_s)

    def _evaluate_due(self, now_s: float) -> int:
        ran = 0
        for group in self.groups:
            interval_s = self.interval_of(group)
            last = group.last_evaluation_s
            if last is None:
                at_s = now_s
            else:
                elapsed = (now_s - last) / interval_s
                if elapsed < 1 - SLOT_TOLERANCE:
                    continue
                at_s = last + max(1, int(elapsed + SLOT_TOLERANCE)) * interval_s
            self.evaluate_group(group, at_s)
            ran += 1
        return ran

    def evaluate_group(self, group: RuleGroup, now_s: float) -> None:
        t_ms = int(round(now_s * 1000))
        for rule in group.rules:
            started = time.perf_counter()
            try:
                samples = self.engine.instant_samples(rule.expr, now_s)
                if rule.kind == "record":
                    out = self._record(rule, samples)
                    if group.limit and len(out) > group.limit:  # the group's `limit`, as Prometheus enforces it
                        raise QueryError(f"exceeded limit of {group.limit} with {len(out)} series")
                else:
                    out = self._alert(rule, samples, now_s)
                    count = sum(1 for a in rule.active.values() if a.state != INACTIVE)
                    if group.limit and count > group.limit:
                        rule.active = {}
                        raise QueryError(f"exceeded limit of {group.limit} with {count} alerts")
                rule.last_error = None
            except (QueryError, DuplicateAlertError, TemplateError) as exc:
                rule.last_error = str(exc)
                out = []
            written = set()
            for labels, value in out:
                self.store.append(labels, t_ms, value)
                written.add(labels)
            for gone in rule.written - written:
                self.store.mark_stale(gone, t_ms)
            rule.written = written
            rule.last_evaluation_s = now_s
            rule.evaluation_time_s = time.perf_counter() - started
        group.last_evaluation_s = now_s

    def _record(self, rule: Rule, samples: list[tuple[dict[str, str], float]]) -> list[tuple[LabelSet, float]]:
        out: dict[LabelSet, float] = {}
        for labels, value in samples:
            merged = dict(labels)
            merged["__name__"] = rule.name
            merged.update(rule.labels)
            key = labels_key(merged)
            if key in out:
                raise QueryError("vector contains metrics with the same labelset after applying rule labels")
            out[key] = value
        return list(out.items())

    def _alert(self, rule: Rule, samples: list[tuple[dict[str, str], float]], now_s: float) -> list[tuple[LabelSet, float]]:
        results = []

        def query(expr: str) -> list[tuple[dict[str, str], float]]:  # the template function, at this evaluation's time
            return self.engine.instant_samples(expr, now_s)

        for labels, value in samples:
            tmpl_labels = dict(labels)
            merged = {k: v for k, v in labels.items() if k != "__name__"}
            for k, text in rule.labels.items():
                merged[k] = compile_template(text).render(tmpl_labels, value, self.external_labels, self.external_url, query)
            merged["alertname"] = rule.name
            annotations = {
                k: compile_template(text).render(tmpl_labels, value, self.external_labels, self.external_url, query)
                for k, text in rule.annotations.items()
            }
            # an annotation may be empty (Prometheus keeps it); an empty label is dropped
            results.append(AlertResult(labels_key(merged), tuple(sorted(annotations.items())), value))
        first = rule.last_evaluation_s is None
        rule.active, alert_samples = step_alerts(rule.active, results, rule.spec, now_s)
        if first and self.restore_for_state and rule.active:
            self._restore_for_state(rule, now_s)
            rule.active, alert_samples = step_alerts(rule.active, results, rule.spec, now_s)
        # Prometheus 2.x builds ALERTS from the rule's *raw* labels overridden by the alert's: a label whose
        # template rendered empty (so the alert lacks it) shows its template text there
        raw = {k: v for k, v in rule.labels.items() if v != ""}
        if not raw:
            return [(s.labels, s.value) for s in alert_samples]
        return [(labels_key({**raw, **dict(s.labels)}), s.value) for s in alert_samples]

    def _restore_for_state(self, rule: Rule, now_s: float) -> None:
        """After a restart, take activeAt of still-active alerts from ALERTS_FOR_STATE (Prometheus' RestoreForState)."""
        from dataclasses import replace

        from lichen.observe.series import LabelMatcher, stale_mask

        t_ms = int(now_s * 1000)
        for key, alert in list(rule.active.items()):
            want = tuple(sorted(dict(key, __name__="ALERTS_FOR_STATE").items()))
            matchers = [LabelMatcher(k, "=", v) for k, v in want]
            for sd in self.store.select(matchers, t_ms - int(self.outage_tolerance_s * 1000), t_ms - 1):
                if sd.labels != want:
                    continue
                fresh = ~stale_mask(sd.values)
                if fresh.any():
                    active_at = float(sd.values[fresh][-1])
                    if active_at < alert.active_at_s:
                        rule.active[key] = replace(alert, active_at_s=active_at)

    # ------------------------------------------------------------------- views

    def alerts(self, include_resolved: bool = True) -> list[AlertView]:
        out = []
        for group in self.groups:
            for rule in group.rules:
                for alert in rule.active.values():
                    if alert.state == INACTIVE and not include_resolved:
                        continue
                    out.append(
                        AlertView(
                            rule.name,
                            group.name,
                            alert.state,
                            alert.label_dict,
                            alert.annotation_dict,
                            alert.active_at_s,
                            alert.value,
                            alert.fired_at_s,
                            alert.resolved_at_s,
                        )
                    )
        return out

    def firing(self) -> list[AlertView]:
        return [a for a in self.alerts(include_resolved=False) if a.state == FIRING]

    def rules_status(self) -> dict:
        groups = []
        for group in self.groups:
            rules = []
            for rule in group.rules:
                entry = {
                    "name": rule.name,
                    "query": rule.expr,
                    "labels": rule.labels,
                    "health": "unknown" if rule.last_evaluation_s is None else ("err" if rule.last_error else "ok"),
                    "lastError": rule.last_error or "",
                    "evaluationTime": rule.evaluation_time_s,
                    "lastEvaluation": _rfc3339(rule.last_evaluation_s),
                    "type": "recording" if rule.kind == "record" else "alerting",
                }
                if rule.kind == "alert":
                    active = [a for a in self.alerts(include_resolved=False) if a.rule == rule.name and a.group == group.name]
                    entry.update(
                        {
                            "duration": rule.for_s,
                            "keepFiringFor": rule.keep_firing_for_s,
                            "annotations": rule.annotations,
                            "alerts": [a.to_json() for a in active],
                            "state": "firing"
                            if any(a.state == FIRING for a in active)
                            else ("pending" if active else "inactive"),
                        }
                    )
                rules.append(entry)
            groups.append(
                {
                    "name": group.name,
                    "file": group.source,
                    "interval": self.interval_of(group),
                    "limit": group.limit,
                    "rules": rules,
                    "evaluationTime": sum(r.evaluation_time_s or 0.0 for r in group.rules),
                    "lastEvaluation": _rfc3339(group.last_evaluation_s),
                }
            )
        return {"groups": groups}
