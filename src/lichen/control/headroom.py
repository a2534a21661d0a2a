"""Alert headroom and a per-service risk score, as pure functions.

**Headroom** of a threshold rule ``z OP θ`` (``θ > 0``) is how much of the
way to the threshold is still free:

* alerts that fire *above* the threshold (``z > θ``, ``z >= θ``): ``h = 1 − z/θ``;
* alerts that fire *below* it (``z < θ``, ``z <= θ``) -- the ratio is inverted:
  ``h = 1 − θ/z`` (``−∞`` when ``z ≤ 0``).

Either way ``h = 1`` means "as far from the threshold as can be" (``z = 0``
for an upper bound, ``z → ∞`` for a lower bound), ``h = 0`` means "at the
threshold", and ``h < 0`` means the condition holds (the alert is pending or
firing). ``1 − h`` is the *utilisation* of the threshold (``z/θ`` or ``θ/z``).
Equality rules (``up == 0``) and thresholds ``θ ≤ 0`` have no headroom.

Rules built from several comparisons combine as the alert does:
``A and B`` fires only when both hold, so its headroom is the *larger* of the
two; ``A or B`` fires when either holds, so it is the *smaller*; ``A unless B``
can fire only when ``A`` holds, so it is ``A``'s.

**Risk score** of a service, in ``[0, 1]``::

    risk = 1                                  if an alert of the service fires
    risk = clamp(1 − min_r h_r, 0, 1)         otherwise (max utilisation)
    risk = 0                                  if it has no threshold rule with data

where ``h_r`` is the headroom of rule ``r`` for that service (the minimum over
its series). Why this definition: an alert fires as soon as *any* single
rule's condition holds, so the service is exactly as close to alerting as its
closest rule -- taking the maximum utilisation, not a sum, keeps the score from
growing with the number of rules. It is monotone (moving any metric toward its
threshold never lowers it), unit-free (ratios, so latency and error ratios are
comparable), reaches 1 exactly when some rule's condition holds, and stays
in ``[0, 1]``. It is a normalised distance, not a probability; see
docs/alerting.md for why the design brief's ``P = Σ (1 − zᵢ/θᵢ)ⁿ`` is not one
either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import promql_parser as pp

COMPARISONS = {">", ">=", "<", "<="}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
_ARITH = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else math.nan,
    "^": lambda a, b: a**b,
}


@dataclass(frozen=True)
class Threshold:
    """``metric_expr OP threshold``: the PromQL of ``z``, the comparison, and ``θ``."""

    metric_expr: str
    op: str
    threshold: float

    @property
    def fires_above(self) -> bool:
        return self.op in (">", ">=")

    def headroom(self, z: float) -> float | None:
        return headroom(z, self.threshold, fires_above=self.fires_above)


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


def headroom(z: float, threshold: float, *, fires_above: bool = True) -> float | None:
    """``1 − z/θ`` for upper thresholds, ``1 − θ/z`` for lower ones; None when undefined."""
    if threshold <= 0 or math.isnan(z) or math.isnan(threshold) or math.isinf(threshold):
        return None
    if fires_above:
        return 1.0 - z / threshold
    if z <= 0:
        return -math.inf
    return 1.0 - threshold / z


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


def _condition(node: object) -> Condition | None:
    if isinstance(node, pp.ParenExpr):
        return _condition(node.expr)
    if not isinstance(node, pp.BinaryExpr):
        return None
    op = str(node.op)
    if op in COMPARISONS:
        if node.modifier is not None and node.modifier.return_bool:
            return None
        rhs, lhs = _constant(node.rhs), _constant(node.lhs)
        if rhs is not None and lhs is None:
            return Condition("leaf", Threshold(str(node.lhs), op, rhs))
        if lhs is not None and rhs is None:
            return Condition("leaf", Threshold(str(node.rhs), _FLIP[op], lhs))
        return None
    if op in ("and", "or"):
        parts = tuple(c for c in (_condition(node.lhs), _condition(node.rhs)) if c is not None)
        if not parts:
            return None
        if len(parts) == 1 and op == "and":
            return parts[0]  # `A > θ and on(...) filter`: only A has a threshold
        if len(parts) == 1:
            return None  # `A or <anything>`: the other side may fire with no threshold
        return Condition(op, children=parts)
    if op == "unless":
        return _condition(node.lhs)
    return None


def condition_of(expr: str) -> Condition | None:
    """The threshold structure of an alert expression, or None if it has none.

    Raises ``ValueError`` when ``expr`` is not valid PromQL.
    """
    try:
        node = pp.parse(expr)
    except Exception as exc:  # promql_parser raises a bare ValueError/Exception
        raise ValueError(f"invalid PromQL {expr!r}: {exc}") from None
    return _condition(node)


def condition_headroom(
    condition: Condition, values: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Headroom per service of a condition.

    ``values[metric_expr][service]`` is the current ``z`` of a threshold's series
    for a service (the caller takes the extreme over that service's series).
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
    combine = max if condition.kind == "and" else min
    services = set().union(*parts)
    return {s: combine(p[s] for p in parts if s in p) for s in services}


def worst_value(threshold: Threshold, samples: Iterable[float]) -> float | None:
    """The series value closest to (or furthest past) the threshold: max for upper, min for lower."""
    finite = [v for v in samples if not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if threshold.fires_above else min(finite)


def risk_score(headrooms: Iterable[float], *, firing: bool = False) -> float:
    """The service risk in [0, 1]: 1 if firing, else the clamped maximum utilisation ``1 − min h``."""
    if firing:
        return 1.0
    worst = min(headrooms, default=None)
    if worst is None:
        return 0.0
    return min(1.0, max(0.0, 1.0 - worst))


def design_brief_p(pairs: Iterable[tuple[float, float]], n: int) -> float:
    """The design brief's ``P = Σᵢ (1 − zᵢ/θᵢ)ⁿ`` -- kept only to document why Lichen does not use it."""
    return sum((1.0 - z / theta) ** n for z, theta in pairs)
