"""Alert headroom and a per-service risk score, as pure functions.

**Headroom** of a threshold rule ``z OP θ`` is the distance from ``z`` to the
threshold, relative to the room between the threshold and the quantity's
*healthy bound* ``b`` (the value furthest from firing)::

    fires above (z > θ, z >= θ):  h = (θ − z) / (θ − b)     b = the lowest value z can take
    fires below (z < θ, z <= θ):  h = (z − θ) / (b − θ)     b = the highest value z can take

so ``h = 1`` at the healthy bound, ``h = 0`` exactly at the threshold and
``h < 0`` past it (the condition holds). ``h`` is capped at 1. ``b`` comes from
the expression (``lichen.control.value_ranges``: ``up`` and ``*_ratio`` are in
[0, 1], rates and counters are never negative, ``1 - x`` and ``avg_over_time``
keep ranges, ...), never from observed data. When the range is not known:

* an upper bound assumes ``b = 0`` (most metrics are counts, durations, sizes
  or ratios): ``h = 1 − z/θ``, the unused share of the threshold (needs ``θ ≥ 0``);
* a lower bound on a quantity without a maximum uses the relative distance
  ``h = 1 − θ/z`` (how much ``z`` may shrink; ``−∞`` for ``z ≤ 0``; needs ``θ > 0``).

A threshold *at* the healthy bound (``errors > 0`` on a count, ``up == 0``
read as ``up <= 0``) is a flag: ``h = 1`` while it does not hold, negative
when it does. Equality rules become inequalities when the constant is a bound
of the range (``up == 0`` is ``up <= 0``, ``up != 1`` is ``up < 1``); other
equalities, and thresholds with no healthy side, have no headroom.

Rules built from several comparisons combine as the alert does: ``A and B``
fires only when both hold, so its headroom is the *larger* of the two (and it
has no data when either has none); ``A or B`` fires when either holds, so it
is the *smaller*. A side without a threshold is a filter: ``A > θ unless C``
and ``A > θ and C`` measure ``z`` only on the series of ``A`` that the filter
keeps (a target no longer scraped, or a series ``C`` excludes, cannot fire,
so it does not count).

**Risk** of one rule for one service, in ``[0, 1]``, counts the way to firing
in two stretches -- the value's way to the threshold, then the ``for:`` wait::

    firing                       1
    pending for p s of `for`     0.9 + 0.09 · min(p/for, 1)   (a pending alert is never 1)
    otherwise                    0.9 · clamp(1 − h, 0, 1)
    no data (no series)          None

The **risk of a service** is the maximum over its rules (``None`` when no rule
has data). Why: an alert fires as soon as *any one* rule fires, so a service
is exactly as close to alerting as its nearest rule -- a maximum, not a sum,
so rules far from their thresholds add nothing. It is monotone (moving a
metric toward its threshold, or waiting longer in pending, never lowers it),
unit-free, bounded, and 1 exactly when an alert fires. It is a normalised
distance, not a probability; see docs/alerting.md for why the design brief's
``P = Σ (1 − zᵢ/θᵢ)ⁿ`` is not one either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import promql_parser as pp

from lichen.control.alerting import FIRING, INACTIVE, PENDING
from lichen.control.value_ranges import UNBOUNDED, ValueRange, value_range

COMPARISONS = {">", ">=", "<", "<="}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
_ARITH = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else math.nan,
    "^": lambda a, b: a**b,
}
PENDING_RISK = 0.9
"""risk when the condition first holds; the rest of the scale is the ``for:`` wait"""
PENDING_RISK_MAX = 0.99
WARNING_HEADROOM = 0.2
RISK_WARNING = PENDING_RISK * (1.0 - WARNING_HEADROOM)
"""risk at which the dashboard turns a service orange: headroom 0.2 or less, or pending"""


def healthy_bound(op: str, threshold: float, value_range: ValueRange = UNBOUNDED) -> float | None:
    """The value of ``z`` furthest from firing for ``z OP threshold`` (``inf``: no maximum); None if none."""
    if not math.isfinite(threshold):
        return None
    lo, hi = value_range
    if op in (">", ">="):
        floor = lo if math.isfinite(lo) else (0.0 if threshold >= 0 else None)
        if floor is None or floor > threshold or (floor == threshold and op == ">="):
            return None
        return floor
    if op in ("<", "<="):
        if math.isfinite(hi):
            return None if hi < threshold or (hi == threshold and op == "<=") else hi
        return math.inf if threshold > 0 else None
    return None


def headroom(z: float, threshold: float, op: str = ">", value_range: ValueRange = UNBOUNDED) -> float | None:
    """The headroom of ``z OP threshold`` (see the module docs); None when it has none or ``z`` is NaN."""
    bound = healthy_bound(op, threshold, value_range)
    if bound is None or math.isnan(z):
        return None
    lo, hi = value_range
    if op in (">", ">="):
        if bound == threshold:  # a flag: any value above the healthy bound fires
            if z <= threshold:
                return 1.0
            return -(z - threshold) / (hi - threshold) if math.isfinite(hi) else -math.inf
        return min(1.0, (threshold - z) / (threshold - bound))
    if math.isinf(bound):
        return -math.inf if z <= 0 else min(1.0, 1.0 - threshold / z)
    if bound == threshold:
        if z >= threshold:
            return 1.0
        return -(threshold - z) / (threshold - lo) if math.isfinite(lo) else -math.inf
    return min(1.0, (z - threshold) / (bound - threshold))


@dataclass(frozen=True)
class Threshold:
    """``metric_expr OP threshold``: the PromQL of ``z``, the comparison, ``θ`` and the range of ``z``."""

    metric_expr: str
    op: str
    threshold: float
    value_range: ValueRange = UNBOUNDED

    @property
    def fires_above(self) -> bool:
        return self.op in (">", ">=")

    @property
    def healthy(self) -> float | None:
        return healthy_bound(self.op, self.threshold, self.value_range)

    def headroom(self, z: float) -> float | None:
        return headroom(z, self.threshold, self.op, self.value_range)


@dataclass(frozen=True)
class Condition:
    """A tree of thresholds joined by ``and``/``or`` (``kind == "leaf"`` holds one)."""

    kind: str  # "leaf" | "and" | "or"
    threshold: Threshold | None = None
    children: tuple[Condition, ...] = ()

    def thresholds(self) -> list[Threshold]:
        if self.threshold is not None:
            return [self.threshold]
        return [t for c in self.children for t in c.thresholds()]


def _constant(node: object) -> float | None:
    if isinstance(node, pp.NumberLiteral):
        return float(node.val)
    if isinstance(node, pp.ParenExpr):
        return _constant(node.expr)
    if isinstance(node, pp.UnaryExpr):
        inner = _constant(node.expr)
        return None if inner is None else -inner
    if isinstance(node, pp.BinaryExpr) and str(node.op) in _ARITH:
        a, b = _constant(node.lhs), _constant(node.rhs)
        if a is None or b is None:
            return None
        return float(_ARITH[str(node.op)](a, b))
    return None


def _as_inequality(op: str, threshold: float, value_range: ValueRange) -> str | None:
    """``==``/``!=`` against a bound of the range as the inequality it equals (``up == 0``: ``up <= 0``)."""
    lo, hi = value_range
    if op in COMPARISONS:
        return op
    if lo == hi:
        return None
    if threshold == lo:
        return "<=" if op == "==" else ">"
    if threshold == hi:
        return ">=" if op == "==" else "<"
    return None


def _leaf(metric: object, op: str, threshold: float) -> Condition | None:
    z_range = value_range(metric)
    inequality = _as_inequality(op, threshold, z_range)
    if inequality is None or healthy_bound(inequality, threshold, z_range) is None:
        return None
    return Condition("leaf", Threshold(str(metric), inequality, threshold, z_range))


def _condition(node: object) -> Condition | None:
    if isinstance(node, pp.ParenExpr):
        return _condition(node.expr)
    if not isinstance(node, pp.BinaryExpr):
        return None
    op = str(node.op)
    if op in _FLIP:
        if node.modifier is not None and node.modifier.return_bool:
            return None
        rhs, lhs = _constant(node.rhs), _constant(node.lhs)
        if rhs is not None and lhs is None:
            return _leaf(node.lhs, op, rhs)
        if lhs is not None and rhs is None:
            return _leaf(node.rhs, _FLIP[op], lhs)
        return None
    if op in ("and", "or"):
        lhs, rhs = _condition(node.lhs), _condition(node.rhs)
        if lhs is not None and rhs is not None:
            return Condition(op, children=(lhs, rhs))
        if op == "or":
            return None  # `A or <anything>`: the other side may fire with no threshold
        if lhs is not None:  # `A > θ and on(...) filter`: only A has a threshold, on the series the filter keeps
            return _filtered(lhs, node, node.rhs)
        return None if rhs is None else _filtered(rhs, node, node.lhs)
    if op == "unless":
        inner = _condition(node.lhs)
        return None if inner is None else _filtered(inner, node, node.rhs)
    return None


def _filtered(condition: Condition, node: pp.BinaryExpr, keep: object) -> Condition:
    """``condition`` with every threshold's ``z`` restricted to the series ``node``'s set
    operation keeps (``avg_over_time(up[10m]) < 0.9 and up``: only targets still scraped)."""
    modifier = f" {node.modifier}" if node.modifier is not None and str(node.modifier) else ""

    def restrict(c: Condition) -> Condition:
        if c.threshold is not None:
            t = c.threshold
            metric = f"({t.metric_expr}) {node.op}{modifier} ({keep})"
            return Condition("leaf", Threshold(metric, t.op, t.threshold, t.value_range))
        return Condition(c.kind, children=tuple(restrict(child) for child in c.children))

    return restrict(condition)


def condition_of(expr: str) -> Condition | None:
    """The threshold structure of an alert expression, or None if it has none.

    Raises ``ValueError`` when ``expr`` is not valid PromQL.
    """
    try:
        node = pp.parse(expr)
    except Exception as exc:  # promql_parser raises a bare ValueError/Exception
        raise ValueError(f"invalid PromQL {expr!r}: {exc}") from None
    return _condition(node)


def condition_headroom(condition: Condition, values: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Headroom per service of a condition, for the services that have data.

    ``values[metric_expr][service]`` is the current ``z`` of a threshold's series
    for a service (the caller takes :func:`worst_value` over that service's
    series). A service missing from a threshold's values has no series: an
    ``and`` without data on one side has none either.
    """
    if condition.kind == "leaf":
        t = condition.threshold
        assert t is not None
        out: dict[str, float] = {}
        for service, z in values.get(t.metric_expr, {}).items():
            h = t.headroom(z)
            if h is not None:
                out[service] = h
        return out
    parts = [condition_headroom(c, values) for c in condition.children]
    if condition.kind == "and":
        common = set.intersection(*(set(p) for p in parts))
        return {s: max(p[s] for p in parts) for s in common}
    services = set().union(*parts)
    return {s: min(p[s] for p in parts if s in p) for s in services}


def worst_value(threshold: Threshold, samples: Iterable[float]) -> float | None:
    """The series value closest to (or furthest past) the threshold: max for upper, min for lower."""
    finite = [v for v in samples if not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if threshold.fires_above else min(finite)


@dataclass(frozen=True)
class AlertProgress:
    """How far one rule's alert for one service has got: its state and, when pending, for how long."""

    state: str = INACTIVE
    pending_s: float = 0.0


def alert_progress(alerts: Iterable[tuple[str, str, float]], now_s: float) -> dict[str, AlertProgress]:
    """Per service, the most advanced of a rule's alerts, from ``(service, state, active_at_s)``.

    Firing beats pending; among pending alerts the one pending longest counts.
    """
    out: dict[str, AlertProgress] = {}
    for service, state, active_at_s in alerts:
        if state == FIRING:
            out[service] = AlertProgress(FIRING)
        elif state == PENDING:
            seen = out.get(service, AlertProgress())
            pending_s = max(0.0, now_s - active_at_s)
            if seen.state == INACTIVE or (seen.state == PENDING and pending_s > seen.pending_s):
                out[service] = AlertProgress(PENDING, pending_s)
    return out


def rule_risk(h: float | None, progress: AlertProgress = AlertProgress(), for_s: float = 0.0) -> float | None:
    """One rule's risk for one service (see the module docs); None without data and without an alert."""
    if progress.state == FIRING:
        return 1.0
    by_value = None if h is None else PENDING_RISK * min(1.0, max(0.0, 1.0 - h))
    if progress.state != PENDING:
        return by_value
    waited = min(1.0, progress.pending_s / for_s) if for_s > 0 else 1.0
    by_wait = PENDING_RISK + (PENDING_RISK_MAX - PENDING_RISK) * waited
    return max(by_wait, by_value or 0.0)


def risk_score(rule_risks: Iterable[float | None]) -> float | None:
    """A service's risk: the maximum of its rules' risks; None when none has data."""
    known = [r for r in rule_risks if r is not None]
    return max(known) if known else None


def design_brief_p(pairs: Iterable[tuple[float, float]], n: int) -> float:
    """The design brief's ``P = Σᵢ (1 − zᵢ/θᵢ)ⁿ`` -- kept only to document why Lichen does not use it."""
    return sum((1.0 - z / theta) ** n for z, theta in pairs)
