"""PromQL functions beyond the core set: changes, resets, predict_linear, holt_winters, the
calendar functions, sort/sort_desc, label_join and the element-wise math functions.

Same conventions as :mod:`lichen.observe.promql_functions` (Prometheus 2.42 semantics), whose
``FUNCTIONS`` table names them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from lichen.observe.promql_values import InstantVector, QueryError, drop_name, merge_same_labels


def changes(_t: np.ndarray, v: np.ndarray, _j: int) -> float:
    prev, cur = v[:-1], v[1:]
    return float(np.count_nonzero(~((prev == cur) | (np.isnan(prev) & np.isnan(cur)))))


def resets(_t: np.ndarray, v: np.ndarray, _j: int) -> float:
    return float(np.count_nonzero(v[1:] < v[:-1]))


def predict_linear(duration_s: np.ndarray, step_ts_ms: np.ndarray) -> Callable[[np.ndarray, np.ndarray, int], float]:
    def fn(t: np.ndarray, v: np.ndarray, j: int) -> float:  # linearRegression with the intercept at the step
        if np.all(v == v[0]):
            return math.nan if math.isinf(v[0]) else float(v[0])
        x = (t - step_ts_ms[j]).astype(np.float64) / 1000.0
        n = float(len(v))
        sum_x, sum_y = float(sum(x.tolist())), float(sum(v.tolist()))
        sum_xy, sum_x2 = float(sum((x * v).tolist())), float(sum((x * x).tolist()))
        slope = (sum_xy - sum_x * sum_y / n) / (sum_x2 - sum_x * sum_x / n)
        return slope * float(duration_s[j]) + (sum_y / n - slope * sum_x / n)

    return fn


def holt_winters(sf: np.ndarray, tf: np.ndarray) -> Callable[[np.ndarray, np.ndarray, int], float]:
    """Prometheus 2.x holt_winters (double exponential smoothing) over one window."""

    def fn(_t: np.ndarray, v: np.ndarray, j: int) -> float:
        s, trend = float(sf[j]), float(tf[j])
        if not 0 < s < 1:
            raise QueryError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {s:f}")
        if not 0 < trend < 1:
            raise QueryError(f"invalid trend factor. Expected: 0 < tf < 1, got: {trend:f}")
        values = v.tolist()
        s0, s1, b = 0.0, values[0], values[1] - values[0]
        for i in range(1, len(values)):
            if i > 1:
                b = trend * (s1 - s0) + (1 - trend) * b
            s0, s1 = s1, s * values[i] + (1 - s) * (s1 + b)
        return s1

    return fn


def calendar(vec: InstantVector | None, part: str, step_ts_ms: np.ndarray) -> InstantVector:
    """hour(), minute(), month(), year(), day_of_month(), day_of_week(), day_of_year(), days_in_month() (UTC).

    Of the times in ``vec``, or of each step's time when the call has no argument.
    """
    if vec is None:
        steps = len(step_ts_ms)
        vec = InstantVector([{}], (step_ts_ms.astype(np.float64) / 1000.0).reshape(1, steps), np.ones((1, steps), dtype=bool))
    with np.errstate(invalid="ignore"):
        secs = np.where(np.isfinite(vec.values), vec.values, 0).astype(np.int64)
    days = secs // 86400
    moment = secs.astype("datetime64[s]")
    year = moment.astype("datetime64[Y]")
    month = moment.astype("datetime64[M]")
    table = {
        "minute": lambda: (secs // 60) % 60,
        "hour": lambda: (secs // 3600) % 24,
        "day_of_week": lambda: (days + 4) % 7,
        "day_of_month": lambda: (moment.astype("datetime64[D]") - month).astype(np.int64) + 1,
        "day_of_year": lambda: (moment.astype("datetime64[D]") - year).astype(np.int64) + 1,
        "month": lambda: month.astype(np.int64) % 12 + 1,
        "year": lambda: year.astype(np.int64) + 1970,
        "days_in_month": lambda: ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64),
    }
    out = table[part]().astype(np.float64)
    values = np.where(np.isnan(vec.values), np.nan, out)
    result = InstantVector([drop_name(s) for s in vec.series], values, vec.present.copy())
    return result if len({s.get('__name__') for s in vec.series}) <= 1 else merge_same_labels(result)


def sorted_vector(vec: InstantVector, descending: bool) -> InstantVector:
    first = vec.values[:, 0] if len(vec.series) else np.zeros(0)
    order = sorted(range(len(vec.series)), key=lambda i: (math.isnan(first[i]), -first[i] if descending else first[i]))
    return InstantVector([vec.series[i] for i in order], vec.values[order], vec.present[order])


def label_join(vec: InstantVector, dst: str, sep: str, *src: str) -> InstantVector:
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", dst):
        raise QueryError(f'invalid destination label name in label_join(): "{dst}"')
    series = []
    for labels in vec.series:
        joined = sep.join(labels.get(name, "") for name in src)
        new = {k: v for k, v in labels.items() if k != dst}
        if joined:
            new[dst] = joined
        series.append(new)
    return merge_same_labels(InstantVector(series, vec.values.copy(), vec.present.copy()))


MATH = {
    "sgn": np.sign, "acos": np.arccos, "acosh": np.arccosh, "asin": np.arcsin, "asinh": np.arcsinh, "atan": np.arctan,
    "atanh": np.arctanh, "cos": np.cos, "cosh": np.cosh, "sin": np.sin, "sinh": np.sinh, "tan": np.tan, "tanh": np.tanh,
    "deg": np.degrees, "rad": np.radians,
}  # fmt: skip
CALENDAR = ("minute", "hour", "day_of_week", "day_of_month", "day_of_year", "month", "year", "days_in_month")
