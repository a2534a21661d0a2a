"""Evaluating Prometheus recording and alerting rules, keeping alert state, and reloading rule groups.

The rule-file format (parsing, checking, :class:`~lichen.observe.rule_files.Rule` and
:class:`~lichen.observe.rule_files.RuleGroup`) is :mod:`lichen.observe.rule_files`; what belongs
here is what happens to parsed groups once loaded.

Interface (stable; used by the controller, the notifier, the dashboard and ``lichen rules``):

* ``RuleManager(store, engine, external_labels=None, default_interval_s=60.0, external_url="")``
  * ``.add_groups(groups)`` / ``.load_files(paths)`` / ``.load_text(text, source)``
  * ``.replace_groups(groups, now_s) -> RulesReload`` — a reload as Prometheus does it: unchanged
    groups keep their state, changed ones keep the alerts of rules with the same name and labels
    (decided by :func:`plan_reload`, state carried by :func:`copy_state`).
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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lichen.control.alerting import (
    FIRING,
    INACTIVE,
    AlertResult,
    DuplicateAlertError,
    LabelSet,
    step_alerts,
)
from lichen.observe.promql import Engine, QueryError
from lichen.observe.rule_files import Rule, RuleGroup, load_rule_file, parse_rule_text
from lichen.observe.series import SeriesStore, labels_key
from lichen.observe.templating import TemplateError, compile_template


# How far (as a share of the interval) a tick may come early or late and still
# evaluate its own slot on the group's grid; see RuleManager.evaluate_due.
SLOT_TOLERANCE = 0.1


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
