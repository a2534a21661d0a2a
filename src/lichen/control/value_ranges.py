"""The range of values a PromQL expression can take, read from the expression alone.

Headroom (``lichen.control.headroom``) measures the distance from a rule's
threshold to the *healthy bound* of the quantity: for ``up < 0.9`` that is
``up``'s maximum 1, for an error ratio ``> 0.05`` its minimum 0. This module
infers those bounds from PromQL semantics and Prometheus' naming conventions,
never from observed data:

* ``up`` is 0 or 1 (Prometheus writes it per scrape);
* a metric named ``*_ratio`` is in [0, 1] (Prometheus' naming guide: "ratio,
  values are 0–1"); ``*_total``, ``*_count`` and ``*_bucket`` are counters,
  never negative; any other metric name is unbounded;
* ``rate``, ``irate``, ``increase``, ``count*``, ``stddev*``, ``abs`` are never
  negative; ``histogram_fraction`` is in [0, 1]; ``absent``/``present_over_time``
  are 1; ``avg``/``min``/``max``/``quantile``/``last`` (over time or across
  series), ``topk``/``bottomk`` keep their argument's range; ``sum`` of
  non-negative values is non-negative; ``clamp*`` narrow it;
* arithmetic follows interval arithmetic (``1 - x`` with ``x`` in [0, 1] is in
  [0, 1]); a quotient of two non-negative quantities is non-negative (PromQL
  cannot know it is at most 1); comparisons with ``bool`` are 0 or 1, filters
  keep the compared side's range; ``and``/``unless`` keep the left side's,
  ``or`` takes the union.

Anything else is ``UNBOUNDED``. A range is ``(lo, hi)`` with ``±inf`` for an
unknown end.
"""

from __future__ import annotations

import math

import promql_parser as pp

ValueRange = tuple[float, float]
UNBOUNDED: ValueRange = (-math.inf, math.inf)
NON_NEGATIVE: ValueRange = (0.0, math.inf)
UNIT_INTERVAL: ValueRange = (0.0, 1.0)

_COUNTER_SUFFIXES = ("_total", "_count", "_bucket")
_KEEPS_RANGE = {"avg_over_time", "min_over_time", "max_over_time", "last_over_time", "quantile_over_time",
                "sort", "sort_desc", "label_replace", "label_join"}
_NON_NEGATIVE = {"rate", "irate", "increase", "resets", "changes", "count_over_time", "stddev_over_time",
                 "stdvar_over_time", "abs", "time", "timestamp"}
_ONE = {"absent", "absent_over_time", "present_over_time"}
_AGG_KEEPS_RANGE = {"avg", "min", "max", "quantile", "topk", "bottomk", "limitk"}
_AGG_NON_NEGATIVE = {"count", "count_values", "stddev", "stdvar"}


def metric_range(name: str | None) -> ValueRange:
    """The range of a raw metric, from its name."""
    if not name:
        return UNBOUNDED
    if name == "up" or name.endswith("_ratio"):
        return UNIT_INTERVAL
    if name.endswith(_COUNTER_SUFFIXES):
        return NON_NEGATIVE
    return UNBOUNDED


def _selector_name(selector: object) -> str | None:
    name = getattr(selector, "name", None)
    if name:
        return str(name)
    for matcher in getattr(getattr(selector, "matchers", None), "matchers", []) or []:
        if matcher.name == "__name__" and matcher.op == pp.MatchOp.Equal:
            return str(matcher.value)
    return None


def _union(a: ValueRange, b: ValueRange) -> ValueRange:
    return (min(a[0], b[0]), max(a[1], b[1]))


def _sum_of(r: ValueRange) -> ValueRange:
    if r[0] >= 0:
        return NON_NEGATIVE
    if r[1] <= 0:
        return (-math.inf, 0.0)
    return UNBOUNDED


def _product(a: ValueRange, b: ValueRange) -> ValueRange:
    corners = [x * y for x in a for y in b]
    if any(math.isnan(c) for c in corners):  # inf * 0
        return UNBOUNDED
    return (min(corners), max(corners))


def _arithmetic(op: str, a: ValueRange, b: ValueRange) -> ValueRange:
    if op == "+":
        return (a[0] + b[0], a[1] + b[1])
    if op == "-":
        return (a[0] - b[1], a[1] - b[0])
    if op == "*":
        return _product(a, b)
    if op == "/" and a[0] >= 0 and b[0] >= 0:
        return NON_NEGATIVE
    return UNBOUNDED


def _call_range(node: pp.Call) -> ValueRange:
    name = node.func.name
    args = list(node.args)
    if name in _ONE:
        return (1.0, 1.0)
    if name in _NON_NEGATIVE:
        return NON_NEGATIVE
    if name == "histogram_fraction":
        return UNIT_INTERVAL
    if name in ("vector", "scalar") and args:
        return value_range(args[0])
    vector_args = [a for a in args if not isinstance(a, (pp.NumberLiteral, pp.StringLiteral))]
    inner = value_range(vector_args[0]) if vector_args else UNBOUNDED
    if name in _KEEPS_RANGE:
        return inner
    if name == "sum_over_time":
        return _sum_of(inner)
    bounds = [float(a.val) for a in args if isinstance(a, pp.NumberLiteral)]
    if name == "clamp" and len(bounds) == 2:
        return (max(inner[0], bounds[0]), min(inner[1], bounds[1]))
    if name == "clamp_min" and bounds:
        return (max(inner[0], bounds[0]), max(inner[1], bounds[0]))
    if name == "clamp_max" and bounds:
        return (min(inner[0], bounds[0]), min(inner[1], bounds[0]))
    return UNBOUNDED


def value_range(node: object) -> ValueRange:
    """The values ``node`` (a ``promql_parser`` expression) can take; ``UNBOUNDED`` when unknown."""
    if isinstance(node, pp.NumberLiteral):
        return (float(node.val), float(node.val))
    if isinstance(node, pp.VectorSelector):
        return metric_range(_selector_name(node))
    if isinstance(node, pp.MatrixSelector):
        return metric_range(_selector_name(node.vector_selector))
    if isinstance(node, (pp.ParenExpr, pp.SubqueryExpr)):
        return value_range(node.expr)
    if isinstance(node, pp.UnaryExpr):
        lo, hi = value_range(node.expr)
        return (-hi, -lo)
    if isinstance(node, pp.Call):
        return _call_range(node)
    if isinstance(node, pp.AggregateExpr):
        op, inner = str(node.op), value_range(node.expr)
        if op in _AGG_KEEPS_RANGE:
            return inner
        if op == "sum":
            return _sum_of(inner)
        if op in _AGG_NON_NEGATIVE:
            return NON_NEGATIVE
        if op == "group":
            return (1.0, 1.0)
        return UNBOUNDED
    if isinstance(node, pp.BinaryExpr):
        op = str(node.op)
        lhs, rhs = value_range(node.lhs), value_range(node.rhs)
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return _union(lhs, rhs)
        if op in ("==", "!=", ">", ">=", "<", "<="):
            if node.modifier is not None and node.modifier.return_bool:
                return UNIT_INTERVAL
            # a filter keeps the vector side's values (the left one between two vectors)
            return rhs if isinstance(node.lhs, pp.NumberLiteral) else lhs
        return _arithmetic(op, lhs, rhs)
    return UNBOUNDED


def expression_range(expr: str) -> ValueRange:
    """:func:`value_range` of PromQL text; ``UNBOUNDED`` when it does not parse."""
    try:
        return value_range(pp.parse(expr))
    except Exception:  # noqa: BLE001 - promql_parser raises bare exceptions
        return UNBOUNDED
