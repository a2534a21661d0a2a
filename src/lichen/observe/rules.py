"""Prometheus rule files: loading, checking, and evaluating recording and alerting rules.

Interface (stable; used by the controller, the notifier, the dashboard and ``lichen rules``):

* ``load_rule_file(path) -> list[RuleGroup]`` / ``parse_rule_text(text, source) -> list[RuleGroup]``
  — Prometheus' format (``groups: [{name, interval, rules: [{record|alert, expr, for,
  keep_firing_for, labels, annotations}]}]``); every problem raises :class:`DataError` naming
  ``file:line`` and the field.
* ``RuleManager(store, engine, external_labels=None, default_interval_s=60.0, external_url="")``
  * ``.add_groups(groups)`` / ``.load_files(paths)`` / ``.load_text(text, source)``
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
from lichen.errors import DataError
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
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _LocatedDict(dict):
    line: int = 0
    key_lines: dict[str, int] = {}  # noqa: RUF012 - replaced per instance


def _where(source: str, obj: object, path: str, key: str | None = None) -> str:
    """``file:line path``; with ``key``, the line of that key inside the mapping."""
    line = getattr(obj, "line", 0)
    if key is not None:
        line = getattr(obj, "key_lines", {}).get(key, line)
    return f"{source}:{line} {path}" if line else f"{source} {path}"


def parse_rule_text(text: str, source: str = "<rules>") -> list[RuleGroup]:
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise DataError(f"invalid YAML: {problem}" + (f" ({context})" if context else ""), where=at) from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise DataError("a rule file needs a top-level 'groups:' list", where=source)
    unknown = set(doc) - {"groups"}
    if unknown:
        raise DataError(f"unknown field(s) {sorted(unknown)}", where=_where(source, doc, "", key=sorted(unknown)[0]))
    groups: list[RuleGroup] = []
    names: set[str] = set()
    for gi, g in enumerate(doc["groups"]):
        gpath = f"groups[{gi}]"
        if not isinstance(g, dict) or not g.get("name"):
            raise DataError("each group needs a 'name'", where=_where(source, g, gpath))
        extra = set(g) - {"name", "interval", "rules", "limit", "query_offset"}
        if extra:
            raise DataError(f"unknown field(s) {sorted(extra)} in group {g['name']!r}", where=_where(source, g, gpath, key=sorted(extra)[0]))
        if g["name"] in names:
            raise DataError(f"{g['name']!r}: repeated in the same file", where=_where(source, g, gpath + ".name"))
        names.add(g["name"])
        interval = parse_duration_s(g.get("interval"), _where(source, g, gpath + ".interval", key="interval")) or None
        rules = []
        for ri, r in enumerate(g.get("rules") or []):
            rules.append(_parse_rule(r, source, f"{gpath}.rules[{ri}]"))
        groups.append(RuleGroup(str(g["name"]), interval, rules, source, int(g.get("limit") or 0)))
    return groups


def _parse_rule(r: object, source: str, path: str) -> Rule:
    if not isinstance(r, dict):
        raise DataError("a rule must be a mapping", where=_where(source, r, path))
    where = _where(source, r, path)
    allowed = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    extra = set(r) - allowed
    if extra:
        first = min(extra, key=lambda k: getattr(r, "key_lines", {}).get(k, 0))
        raise DataError(f"unknown field(s) {sorted(extra)}", where=_where(source, r, f"{path}.{first}", key=first))
    if ("record" in r) == ("alert" in r):
        raise DataError("one of 'record' or 'alert' must be set", where=where)
    expr = r.get("expr")
    if expr is None or str(expr).strip() == "":
        raise DataError("field 'expr' must be set", where=where)
    expr = str(expr)
    try:
        parse_expr(expr)
    except QueryError as exc:
        raise DataError(exc.message, where=_where(source, r, path + ".expr", key="expr")) from None
    labels = {str(k): str(v) for k, v in (r.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (r.get("annotations") or {}).items()}
    for field_name, names in (("labels", labels), ("annotations", annotations)):
        for name in names:  # Prometheus' rulefmt: a valid label name, and a rule label may not be __name__
            if not LABEL_NAME.match(name) or (field_name == "labels" and name == "__name__"):
                kind = "label" if field_name == "labels" else "annotation"
                raise DataError(f"invalid {kind} name {name!r}", where=_where(source, r.get(field_name), f"{path}.{field_name}.{name}", key=name))
    if "record" in r:
        name = str(r["record"])
        if not METRIC_NAME.match(name):
            raise DataError(f"invalid recording rule name {name!r}", where=_where(source, r, path + ".record", key="record"))
        for f in ("for", "keep_firing_for", "annotations"):
            if f in r:
                raise DataError(f"invalid field {f!r} in recording rule", where=where)
        return Rule(name, expr, "record", labels=labels, where=where)
    name = str(r["alert"])
    if not METRIC_NAME.match(name):
        raise DataError(f"invalid alert name {name!r}", where=_where(source, r, path + ".alert", key="alert"))
    for key, text in list(labels.items()) + list(annotations.items()):
        try:
            compile_template(text)
        except TemplateError as exc:
            mapping = r.get("labels") if key in labels and labels[key] == text else r.get("annotations")
            raise DataError(f"template of {key!r}: {exc.message}", where=_where(source, mapping, path, key=key)) from None
    return Rule(
        name,
        expr,
        "alert",
        labels=labels,
        annotations=annotations,
        for_s=parse_duration_s(r.get("for"), _where(source, r, path + ".for", key="for")),
        keep_firing_for_s=parse_duration_s(r.get("keep_firing_for"), _where(source, r, path + ".keep_firing_for", key="keep_firing_for")),
        where=where,
    )


def load_rule_file(path: str | Path) -> list[RuleGroup]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DataError(f"cannot read rule file: {exc.strerror}", where=str(p)) from None
    return parse_rule_text(text, str(p))


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

    def add_groups(self, groups: Iterable[RuleGroup]) -> None:
        self.groups.extend(groups)

    def load_files(self, paths: Iterable[str | Path]) -> None:
        for p in paths:
            self.add_groups(load_rule_file(p))

    def load_text(self, text: str, source: str = "<rules>") -> None:
        self.add_groups(parse_rule_text(text, source))

    def interval_of(self, group: RuleGroup) -> float:
        return group.interval_s or self.default_interval_s

    def evaluate_due(self, now_s: float) -> int:
        """Evaluate each group whose next slot has come; returns how many ran.

        Evaluation times stay on each group's grid (``first + k * interval``),
        as Prometheus keeps them: a tick that wakes a little early or late
        (within :data:`SLOT_TOLERANCE` of the interval) evaluates the slot it
        was meant for. Otherwise scheduling jitter would skip a whole
        interval, or make ``now - active_at`` fall just short of ``for``, and
        stretch every alert by one interval.
        """
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
