"""PromQL functions, following Prometheus 2.x ``promql/functions.go`` and ``quantile.go``.

Each function receives evaluated arguments (see :mod:`lichen.observe.promql_values`) and the
step timestamps, and returns a value over every step. Range-vector functions are vectorised
with numpy where they are hot (rate, increase, delta, irate, *_over_time sums and counts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import promql_parser as pp

from lichen.observe.promql_functions_extended import CALENDAR as _CALENDAR
from lichen.observe.promql_functions_extended import MATH as _MATH
from lichen.observe.promql_functions_extended import calendar as _calendar
from lichen.observe.promql_functions_extended import changes as _changes
from lichen.observe.promql_functions_extended import holt_winters as _holt_winters
from lichen.observe.promql_functions_extended import label_join
from lichen.observe.promql_functions_extended import predict_linear as _predict_linear
from lichen.observe.promql_functions_extended import resets as _resets
from lichen.observe.promql_functions_extended import sorted_vector as _sorted
from lichen.observe.promql_values import (
    InstantVector,
    QueryError,
    RangeVector,
    Scalar,
    StringValue,
    Value,
    drop_name,
    merge_same_labels,
)

# ------------------------------------------------------------------ range vector functions


def _range_output(rv: RangeVector, rows: list[tuple[dict, np.ndarray, np.ndarray]], keep_name: bool = False) -> InstantVector:
    steps = len(rv.step_ts_ms)
    if not rows:
        return InstantVector.empty(steps)
    series = [labels if keep_name else drop_name(labels) for labels, _, _ in rows]
    vec = InstantVector(series, np.array([r[1] for r in rows]), np.array([r[2] for r in rows], dtype=bool))
    return merge_same_labels(vec)


def _flat_output(rv: RangeVector, values: np.ndarray, ok: np.ndarray, keep_name: bool = False) -> InstantVector:
    keep = ok.any(axis=1)
    if not keep.any():
        return InstantVector.empty(len(rv.step_ts_ms))
    kept = [labels for labels, k in zip(rv.series, keep, strict=True) if k]
    vec = InstantVector(kept if keep_name else [drop_name(s) for s in kept], values[keep], ok[keep])
    if keep_name or len({s.get("__name__") for s in kept}) <= 1:
        return vec  # selector series are unique, and stay unique when they shared one name
    return merge_same_labels(vec)


def extrapolated_rate(rv: RangeVector, *, is_counter: bool, is_rate: bool) -> InstantVector:
    """rate / increase / delta with Prometheus' extrapolation (2.x extrapolatedRate), all series at once."""
    t, v, lo, hi = rv.flat()
    n = hi - lo
    ok = n >= 2
    if not ok.any():
        return InstantVector.empty(len(rv.step_ts_ms))
    range_end = (rv.step_ts_ms - rv.offset_ms).astype(np.float64)[None, :]
    range_start = range_end - rv.range_ms
    first_i = np.where(ok, lo, 0)
    last_i = np.where(ok, hi - 1, 0)
    first_v, last_v = v[first_i], v[last_i]
    first_t, last_t = t[first_i].astype(np.float64), t[last_i].astype(np.float64)
    result = last_v - first_v
    if is_counter and len(v) > 1:
        prev = v[:-1]
        resets = np.concatenate(([0.0], np.where(v[1:] < prev, prev, 0.0)))
        correction = np.cumsum(resets)
        result = result + (correction[last_i] - correction[first_i])
    with np.errstate(divide="ignore", invalid="ignore"):
        to_start = (first_t - range_start) / 1000.0
        to_end = (range_end - last_t) / 1000.0
        sampled = (last_t - first_t) / 1000.0
        average = sampled / np.maximum(n - 1, 1)
        if is_counter:
            zero_ok = (result > 0) & (first_v >= 0)
            to_zero = sampled * (first_v / np.where(result == 0, 1.0, result))
            to_start = np.where(zero_ok & (to_zero < to_start), to_zero, to_start)
        threshold = average * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, average / 2)
        interval = interval + np.where(to_end < threshold, to_end, average / 2)
        result = result * (interval / sampled)
        if is_rate:
            result = result / (rv.range_ms / 1000.0)
    return _flat_output(rv, result, ok)


def instant_rate(rv: RangeVector, *, is_rate: bool) -> InstantVector:
    """irate / idelta: the last two samples of each window."""
    t, v, lo, hi = rv.flat()
    ok = (hi - lo) >= 2
    if not ok.any():
        return InstantVector.empty(len(rv.step_ts_ms))
    last = np.where(ok, hi - 1, 1)
    prev = last - 1
    lv, pv = v[last], v[prev]
    interval = (t[last] - t[prev]).astype(np.float64) / 1000.0
    result = np.where(lv < pv, lv, lv - pv) if is_rate else lv - pv
    ok = ok & (interval != 0)
    if is_rate:
        with np.errstate(divide="ignore", invalid="ignore"):
            result = result / np.where(interval == 0, 1.0, interval)
    return _flat_output(rv, result, ok)


def _per_window(
    rv: RangeVector, fn: Callable[[np.ndarray, np.ndarray, int], float], keep_name: bool = False, min_samples: int = 1
) -> InstantVector:
    rows = []
    for i, labels in enumerate(rv.series):
        t, v = rv.t_ms[i], rv.values[i]
        lo, hi = rv.windows(i)
        ok = (hi - lo) >= min_samples
        if not ok.any():
            continue
        out = np.zeros(len(lo))
        for j in np.nonzero(ok)[0]:
            out[j] = fn(t[lo[j] : hi[j]], v[lo[j] : hi[j]], int(j))
        rows.append((labels, out, ok))
    return _range_output(rv, rows, keep_name=keep_name)


def _cumulative(rv: RangeVector, kind: str) -> InstantVector:
    t, v, lo, hi = rv.flat()
    count = hi - lo
    ok = count > 0
    if not ok.any():
        return InstantVector.empty(len(rv.step_ts_ms))
    if kind == "count":
        out = count.astype(np.float64)
    elif kind == "present":
        out = np.ones(count.shape)
    elif kind == "last":
        out = v[np.where(ok, hi - 1, 0)]
    elif lo.shape[1] == 1:  # one step: add in order, as Prometheus does
        out = np.array([[sum(v[a:b].tolist())] for a, b in zip(lo[:, 0].tolist(), hi[:, 0].tolist(), strict=True)])
        if kind == "avg":
            out = out / np.maximum(count, 1)
    else:
        cs = np.concatenate(([0.0], np.cumsum(v)))
        out = cs[hi] - cs[lo]
        if kind == "avg":
            out = out / np.maximum(count, 1)
    return _flat_output(rv, out, ok, keep_name=(kind == "last"))


def _quantile(q: float, values: list[float] | np.ndarray) -> float:
    """Prometheus' quantile(): linear interpolation between closest ranks."""
    n = len(values)
    if n == 0:
        return math.nan
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=lambda x: (not math.isnan(x), x))  # Go's sort puts NaN first
    rank = q * (n - 1)
    lower = max(0, int(math.floor(rank)))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _stdvar(values: np.ndarray) -> float:
    count = 0
    mean = 0.0
    aux = 0.0
    for x in values.tolist():
        count += 1
        delta = x - mean
        mean += delta / count
        aux += delta * (x - mean)
    return aux / count


def _deriv(t: np.ndarray, v: np.ndarray, _j: int) -> float:
    if np.all(v == v[0]):
        return math.nan if math.isinf(v[0]) else 0.0
    x = (t - t[0]).astype(np.float64) / 1000.0
    n = float(len(v))
    sum_x, sum_y = float(sum(x.tolist())), float(sum(v.tolist()))
    sum_xy = float(sum((x * v).tolist()))
    sum_x2 = float(sum((x * x).tolist()))
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    return cov_xy / var_x


def _minmax(kind: str) -> Callable[[np.ndarray, np.ndarray, int], float]:
    def fn(_t: np.ndarray, v: np.ndarray, _j: int) -> float:
        best = v[0]
        for x in v[1:]:
            if (kind == "min" and x < best) or (kind == "max" and x > best) or math.isnan(best):
                best = x
        return float(best)

    return fn


# ----------------------------------------------------------------- histogram_quantile


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus 2.x bucketQuantile over (upper_bound, cumulative_count) pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in buckets:  # coalesce equal upper bounds
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    running = -math.inf
    for b in merged:  # ensureMonotonic (a NaN count neither raises the maximum nor is replaced)
        if b[1] > running:
            running = b[1]
        elif b[1] < running:
            b[1] = running
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    lo, hi = 0, len(merged) - 1  # Go's sort.Search: a binary search, which matters when a count is NaN
    while lo < hi:
        mid = (lo + hi) // 2
        if merged[mid][1] >= rank:
            hi = mid
        else:
            lo = mid + 1
    b = lo
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    if count == 0:  # Go's float division: 0/0 is NaN
        return start + (end - start) * (math.nan if rank == 0 else math.copysign(math.inf, rank))
    return start + (end - start) * (rank / count)


def _bucket_quantile_columns(q: np.ndarray, bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`_bucket_quantile` for many steps at once: sorted distinct ``bounds`` (B,), ``counts`` (B, T).

    The same floating-point operations in the same order, so results are bit-identical.
    """
    n_buckets, steps = counts.shape
    if n_buckets < 2 or not math.isinf(bounds[-1]):
        out = np.full(steps, math.nan)
    else:
        counts = np.maximum.accumulate(counts, axis=0)  # ensureMonotonic
        observations = counts[-1]
        with np.errstate(all="ignore"):
            rank = q * observations
            reached = counts[:-1] >= rank[None, :]
            b = np.where(reached.any(axis=0), reached.argmax(axis=0), n_buckets - 1)
            cols = np.arange(steps)
            prev = np.maximum(b - 1, 0)
            start = np.where(b > 0, bounds[prev], 0.0)
            end = bounds[np.minimum(b, n_buckets - 1)]
            below = np.where(b > 0, counts[prev, cols], 0.0)
            count = counts[np.minimum(b, n_buckets - 1), cols] - below
            interpolated = start + (end - start) * ((rank - below) / count)
            out = np.where(b == n_buckets - 1, bounds[-2], interpolated)
            out = np.where((b == 0) & (bounds[0] <= 0), bounds[0], out)
            out = np.where(observations == 0, math.nan, out)
    out = np.where(q < 0, -math.inf, out)
    out = np.where(q > 1, math.inf, out)
    return np.where(np.isnan(q), math.nan, out)


def histogram_quantile(q: Scalar, vec: InstantVector) -> InstantVector:
    steps = vec.values.shape[1]
    groups: dict[tuple, tuple[dict, list[tuple[float, int]]]] = {}
    for i, labels in enumerate(vec.series):
        le = labels.get("le")
        if le is None:
            continue
        try:
            bound = float(le.replace("+Inf", "inf"))
        except ValueError:
            continue
        rest = {k: v for k, v in labels.items() if k not in ("le", "__name__")}
        key = tuple(sorted(rest.items()))
        groups.setdefault(key, (rest, []))[1].append((bound, i))
    series, values, present = [], [], []
    for rest, members in groups.values():
        bounds = np.array([b for b, _ in members])
        rows = np.array([i for _, i in members])
        vals = vec.values[rows]
        mask = vec.present[rows]
        out = np.zeros(steps)
        ok = mask.any(axis=0)
        full = mask.all(axis=0)
        order = np.argsort(bounds, kind="stable")
        slow = ok & ~full
        finite = ~np.isnan(vals).any(axis=0)
        if (full & finite).any() and len(np.unique(bounds)) == len(bounds):
            cols = np.nonzero(full & finite)[0]
            slow = ok & ~(full & finite)
            out[cols] = _bucket_quantile_columns(q.values[cols], bounds[order], vals[order][:, cols])
        else:
            slow = ok
        for j in np.nonzero(slow)[0]:
            sel = order[mask[order, j]]
            pairs = list(zip(bounds[sel].tolist(), vals[sel, j].tolist(), strict=True))
            out[j] = _bucket_quantile(float(q.values[j]), pairs)
        series.append(rest)
        values.append(out)
        present.append(ok)
    if not series:
        return InstantVector.empty(steps)
    return InstantVector(series, np.array(values), np.array(present, dtype=bool))


# ------------------------------------------------------------------- other functions


def _simple(vec: InstantVector, fn: Callable[[np.ndarray], np.ndarray]) -> InstantVector:
    with np.errstate(all="ignore"):
        values = fn(vec.values)
    out = InstantVector([drop_name(s) for s in vec.series], values, vec.present.copy())
    if len({s.get("__name__") for s in vec.series}) <= 1:
        return out
    return merge_same_labels(out)


def _round(vec: InstantVector, to_nearest: Scalar | None) -> InstantVector:
    nearest = to_nearest.values if to_nearest is not None else np.ones(vec.values.shape[1])
    inverse = 1.0 / nearest
    return _simple(vec, lambda v: np.floor(v * inverse + 0.5) / inverse)


_GO_REPL = re.compile(r"\$(?:\{(\w*)\}|(\w+)|(\$))")


def _expand_replacement(template: str, match: re.Match[str]) -> str:
    """Go's regexp.Expand: $1, ${1}, $name, ${name}, $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if name.isdigit():
            idx = int(name)
            return (match.group(idx) or "") if idx <= (match.re.groups or 0) else ""
        try:
            return match.group(name) or ""
        except (IndexError, re.error):
            return ""

    return _GO_REPL.sub(sub, template)


def label_replace(vec: InstantVector, dst: str, replacement: str, src: str, regex: str) -> InstantVector:
    try:
        pattern = re.compile(f"^(?:{regex})$", re.DOTALL)
    except re.error as exc:
        raise QueryError(f'invalid regular expression in label_replace(): "{regex}": {exc}') from None
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", dst):
        raise QueryError(f'invalid destination label name in label_replace(): "{dst}"')
    series = []
    for labels in vec.series:
        m = pattern.match(labels.get(src, ""))
        if m is None:
            series.append(labels)
            continue
        res = _expand_replacement(replacement, m)
        new = dict(labels)
        if res:
            new[dst] = res
        else:
            new.pop(dst, None)
        series.append(new)
    return merge_same_labels(InstantVector(series, vec.values.copy(), vec.present.copy()))


def absent(vec: InstantVector | RangeVector, equality_labels: dict[str, str], steps: int) -> InstantVector:
    if isinstance(vec, RangeVector):
        any_present = np.zeros(steps, dtype=bool)
        for i in range(len(vec.series)):
            lo, hi = vec.windows(i)
            any_present |= hi > lo
    else:
        any_present = vec.present.any(axis=0) if len(vec.series) else np.zeros(steps, dtype=bool)
    missing = ~any_present
    return InstantVector([dict(equality_labels)], np.ones((1, steps)), missing.reshape(1, steps))


def scalar_of(vec: InstantVector) -> Scalar:
    steps = vec.values.shape[1]
    count = vec.present.sum(axis=0) if len(vec.series) else np.zeros(steps, dtype=int)
    out = np.full(steps, math.nan)
    if len(vec.series):
        picked = np.where(vec.present, vec.values, 0.0).sum(axis=0)
        out = np.where(count == 1, picked, math.nan)
    return Scalar(out)


# ------------------------------------------------------------------- the function table


@dataclass(frozen=True, slots=True)
class Arguments:
    """One call's evaluated arguments, already checked against its signature, with their expressions."""

    values: Sequence[Value]
    nodes: Sequence[pp.Expr]
    step_ts_ms: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.step_ts_ms)

    def vector(self, i: int) -> InstantVector:
        value = self.values[i]
        assert isinstance(value, InstantVector)
        return value

    def matrix(self, i: int) -> RangeVector:
        value = self.values[i]
        assert isinstance(value, RangeVector)
        return value

    def scalar(self, i: int) -> Scalar:
        value = self.values[i]
        assert isinstance(value, Scalar)
        return value

    def strings(self, first: int) -> list[str]:
        out = []
        for value in self.values[first:]:
            assert isinstance(value, StringValue)
            out.append(value.value)
        return out


@dataclass(frozen=True, slots=True)
class Function:
    """A PromQL function: its signature and its implementation, one entry of :data:`FUNCTIONS`.

    ``arg_types``: what each argument must evaluate to; the last ``optional_args`` may be left out, and
    a ``variadic`` function repeats its last type. ``apply`` is None where the engine evaluates the
    call itself (``timestamp``, which reads sample times from the store).
    """

    arg_types: tuple[type[Value], ...]
    apply: Callable[[Arguments], Value] | None
    optional_args: int = 0
    variadic: bool = False


def _absent_labels(node: pp.Expr) -> dict[str, str]:
    """The labels absent() gives its sample: the selector's equality matchers on labels matched once (funcAbsent)."""
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    if isinstance(node, pp.MatrixSelector):
        node = node.vector_selector
    if not isinstance(node, pp.VectorSelector):
        return {}
    matchers = node.matchers.matchers
    names = [m.name for m in matchers]
    return {
        m.name: m.value
        for m in matchers
        if str(m.op) == "MatchOp.Equal" and m.name != "__name__" and names.count(m.name) == 1
    }


def _clamp(args: Arguments) -> InstantVector:
    lo, hi = args.scalar(1).values, args.scalar(2).values
    out = _simple(args.vector(0), lambda v: np.where(np.isnan(v), v, np.maximum(lo, np.minimum(hi, v))))
    out.present &= (lo <= hi)[None, :]
    return out


def _clamp_min(args: Arguments) -> InstantVector:
    lo = args.scalar(1).values
    return _simple(args.vector(0), lambda v: np.where(np.isnan(v), v, np.maximum(v, lo)))


def _clamp_max(args: Arguments) -> InstantVector:
    hi = args.scalar(1).values
    return _simple(args.vector(0), lambda v: np.where(np.isnan(v), v, np.minimum(v, hi)))


def _quantile_over_time(args: Arguments) -> InstantVector:
    q = args.scalar(0).values
    return _per_window(args.matrix(1), lambda _t, v, j: _quantile(float(q[j]), v.tolist()))


def _predict_linear_call(args: Arguments) -> InstantVector:
    return _per_window(args.matrix(0), _predict_linear(args.scalar(1).values, args.step_ts_ms), min_samples=2)


def _double_exponential_smoothing(args: Arguments) -> InstantVector:
    smoothing, trend = args.scalar(1).values, args.scalar(2).values
    return _per_window(args.matrix(0), _holt_winters(smoothing, trend), min_samples=2)


def _vector(args: Arguments) -> InstantVector:
    steps = args.steps
    return InstantVector([{}], args.scalar(0).values.reshape(1, steps).copy(), np.ones((1, steps), dtype=bool))


def _elementwise(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arguments], Value]:
    return lambda args: _simple(args.vector(0), fn)


def _calendar_part(part: str) -> Callable[[Arguments], Value]:
    return lambda args: _calendar(args.vector(0) if args.values else None, part, args.step_ts_ms)


_VECTOR, _MATRIX, _SCALAR, _STRING = InstantVector, RangeVector, Scalar, StringValue

#: every supported function by name, as Prometheus' ``FunctionCalls``: a name missing here is rejected when parsed
FUNCTIONS: dict[str, Function] = {
    "rate": Function((_MATRIX,), lambda a: extrapolated_rate(a.matrix(0), is_counter=True, is_rate=True)),
    "increase": Function((_MATRIX,), lambda a: extrapolated_rate(a.matrix(0), is_counter=True, is_rate=False)),
    "delta": Function((_MATRIX,), lambda a: extrapolated_rate(a.matrix(0), is_counter=False, is_rate=False)),
    "irate": Function((_MATRIX,), lambda a: instant_rate(a.matrix(0), is_rate=True)),
    "idelta": Function((_MATRIX,), lambda a: instant_rate(a.matrix(0), is_rate=False)),
    "deriv": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), _deriv, min_samples=2)),
    "avg_over_time": Function((_MATRIX,), lambda a: _cumulative(a.matrix(0), "avg")),
    "sum_over_time": Function((_MATRIX,), lambda a: _cumulative(a.matrix(0), "sum")),
    "count_over_time": Function((_MATRIX,), lambda a: _cumulative(a.matrix(0), "count")),
    "last_over_time": Function((_MATRIX,), lambda a: _cumulative(a.matrix(0), "last")),
    "present_over_time": Function((_MATRIX,), lambda a: _cumulative(a.matrix(0), "present")),
    "min_over_time": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), _minmax("min"))),
    "max_over_time": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), _minmax("max"))),
    "stddev_over_time": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), lambda _t, v, _j: math.sqrt(_stdvar(v)))),
    "stdvar_over_time": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), lambda _t, v, _j: _stdvar(v))),
    "quantile_over_time": Function((_SCALAR, _MATRIX), _quantile_over_time),
    "changes": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), _changes)),
    "resets": Function((_MATRIX,), lambda a: _per_window(a.matrix(0), _resets)),
    "predict_linear": Function((_MATRIX, _SCALAR), _predict_linear_call),
    "double_exponential_smoothing": Function((_MATRIX, _SCALAR, _SCALAR), _double_exponential_smoothing),
    "histogram_quantile": Function((_SCALAR, _VECTOR), lambda a: histogram_quantile(a.scalar(0), a.vector(1))),
    "absent": Function((_VECTOR,), lambda a: absent(a.vector(0), _absent_labels(a.nodes[0]), a.steps)),
    "absent_over_time": Function((_MATRIX,), lambda a: absent(a.matrix(0), _absent_labels(a.nodes[0]), a.steps)),
    "abs": Function((_VECTOR,), _elementwise(np.abs)),
    "ceil": Function((_VECTOR,), _elementwise(np.ceil)),
    "floor": Function((_VECTOR,), _elementwise(np.floor)),
    "sqrt": Function((_VECTOR,), _elementwise(np.sqrt)),
    "exp": Function((_VECTOR,), _elementwise(np.exp)),
    "ln": Function((_VECTOR,), _elementwise(np.log)),
    "log2": Function((_VECTOR,), _elementwise(np.log2)),
    "log10": Function((_VECTOR,), _elementwise(np.log10)),
    "clamp": Function((_VECTOR, _SCALAR, _SCALAR), _clamp),
    "clamp_min": Function((_VECTOR, _SCALAR), _clamp_min),
    "clamp_max": Function((_VECTOR, _SCALAR), _clamp_max),
    "round": Function((_VECTOR, _SCALAR), lambda a: _round(a.vector(0), a.scalar(1) if len(a.values) > 1 else None), optional_args=1),
    "time": Function((), lambda a: Scalar(a.step_ts_ms.astype(np.float64) / 1000.0)),
    "pi": Function((), lambda a: Scalar(np.full(a.steps, math.pi))),
    "vector": Function((_SCALAR,), _vector),
    "scalar": Function((_VECTOR,), lambda a: scalar_of(a.vector(0))),
    "sort": Function((_VECTOR,), lambda a: _sorted(a.vector(0), descending=False)),
    "sort_desc": Function((_VECTOR,), lambda a: _sorted(a.vector(0), descending=True)),
    "timestamp": Function((_VECTOR,), None),
    "label_replace": Function((_VECTOR, _STRING, _STRING, _STRING, _STRING), lambda a: label_replace(a.vector(0), *a.strings(1))),
    # label_join(v, dst, separator, src_1, src_2, ...): any number of source labels, even none
    "label_join": Function(
        (_VECTOR, _STRING, _STRING, _STRING), lambda a: label_join(a.vector(0), *a.strings(1)), optional_args=1, variadic=True
    ),
    **{name: Function((_VECTOR,), _elementwise(fn)) for name, fn in _MATH.items()},
    **{name: Function((_VECTOR,), _calendar_part(name), optional_args=1) for name in _CALENDAR},
}

__all__ = ["FUNCTIONS", "Arguments", "Function"]
