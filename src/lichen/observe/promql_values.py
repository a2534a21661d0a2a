"""PromQL value types evaluated over a grid of steps, and Prometheus' JSON formatting of them.

Every expression is evaluated over all steps of a query at once (an instant query is a range
query with one step), which lets numpy do the per-step work:

* :class:`Scalar` — one float per step, shape ``(T,)``.
* :class:`InstantVector` — ``S`` series (label dicts) with ``values`` and ``present`` arrays of
  shape ``(S, T)``; a series is part of the vector at step ``j`` only where ``present[:, j]``.
* :class:`RangeVector` — a matrix selector's raw samples per series (stale markers removed), with
  the window ``[t - offset - range, t - offset]`` of each step given by :meth:`RangeVector.windows`.
* :class:`StringValue` — a string literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lichen.errors import DataError
from lichen.observe.series import labels_key


class QueryError(DataError):
    """A PromQL expression cannot be parsed, is unsupported, or failed while evaluating."""


@dataclass
class Scalar:
    values: np.ndarray


@dataclass
class StringValue:
    value: str


@dataclass
class InstantVector:
    series: list[dict[str, str]]
    values: np.ndarray
    present: np.ndarray

    @classmethod
    def empty(cls, steps: int) -> InstantVector:
        return cls([], np.empty((0, steps)), np.zeros((0, steps), dtype=bool))

    def __len__(self) -> int:
        return len(self.series)


class _Slices:
    """Per-series views into a flat array, made on access."""

    __slots__ = ("array", "starts", "ends")

    def __init__(self, array: np.ndarray, starts: list[int], ends: list[int]) -> None:
        self.array, self.starts, self.ends = array, starts, ends

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.starts[i] : self.ends[i]]

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class RangeVector:
    series: list[dict[str, str]]
    t_ms: list[np.ndarray]
    values: list[np.ndarray]
    range_ms: int
    offset_ms: int
    step_ts_ms: np.ndarray
    selector_text: str = ""
    equality_labels: dict[str, str] = field(default_factory=dict)
    flat_samples: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (t_all, v_all, lengths) when built flat

    @classmethod
    def from_flat(
        cls, series: list[dict[str, str]], t_all: np.ndarray, v_all: np.ndarray, lengths: np.ndarray,
        range_ms: int, offset_ms: int, step_ts_ms: np.ndarray, selector_text: str = "",
    ) -> RangeVector:
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]]
        return cls(series, _Slices(t_all, starts, ends), _Slices(v_all, starts, ends), range_ms, offset_ms, step_ts_ms,  # type: ignore[arg-type]
                   selector_text, flat_samples=(t_all, v_all, lengths))

    def windows(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Index bounds ``[lo, hi)`` of series ``i``'s samples inside each step's window (closed range, as Prometheus 2.x)."""
        end = self.step_ts_ms - self.offset_ms
        start = end - self.range_ms
        t = self.t_ms[i]
        return np.searchsorted(t, start, side="left"), np.searchsorted(t, end, side="right")

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All series' samples concatenated, with window bounds of shape ``(S, T)`` into the flat arrays.

        Lets range functions run as a handful of numpy operations whatever the number of series.
        """
        if not self.series:
            empty = np.zeros((0, len(self.step_ts_ms)), dtype=np.int64)
            return np.empty(0, np.int64), np.empty(0), empty, empty
        if self.flat_samples is not None:
            t_all, v_all, lengths = self.flat_samples
        else:
            lengths = np.array([len(t) for t in self.t_ms], dtype=np.int64)
            t_all = np.concatenate(self.t_ms)
            v_all = np.concatenate(self.values)
        base = int(t_all.min()) - self.range_ms - self.offset_ms - 1
        span = int(max(int(t_all.max()), int(self.step_ts_ms.max())) - base + 1)
        series_idx = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        key = series_idx * span + (t_all - base)
        end = (self.step_ts_ms - self.offset_ms - base)[None, :]
        start = end - self.range_ms
        rows = (np.arange(len(lengths), dtype=np.int64) * span)[:, None]
        lo = np.searchsorted(key, rows + np.maximum(start, 0), side="left")
        hi = np.searchsorted(key, rows + np.minimum(end, span - 1), side="right")
        return t_all, v_all, lo, hi


Value = Scalar | StringValue | InstantVector | RangeVector


def drop_name(labels: dict[str, str]) -> dict[str, str]:
    if "__name__" not in labels:
        return labels
    return {k: v for k, v in labels.items() if k != "__name__"}


def merge_same_labels(vec: InstantVector, what: str = "vector cannot contain metrics with the same labelset") -> InstantVector:
    """Fold series whose label sets are equal; an overlap at one step is Prometheus' duplicate-labelset error."""
    keys = [frozenset(s.items()) for s in vec.series]
    if len(set(keys)) == len(keys):
        return vec
    order: dict[frozenset, int] = {}
    series: list[dict[str, str]] = []
    values: list[np.ndarray] = []
    present: list[np.ndarray] = []
    for i, key in enumerate(keys):
        j = order.get(key)
        if j is None:
            order[key] = len(series)
            series.append(vec.series[i])
            values.append(vec.values[i].copy())
            present.append(vec.present[i].copy())
            continue
        if np.any(present[j] & vec.present[i]):
            raise QueryError(f"{what}: {format_labels(vec.series[i])}")
        values[j] = np.where(vec.present[i], vec.values[i], values[j])
        present[j] |= vec.present[i]
    steps = vec.values.shape[1]
    return InstantVector(
        series,
        np.array(values).reshape(len(series), steps),
        np.array(present, dtype=bool).reshape(len(series), steps),
    )


def format_labels(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def format_value(v: float) -> str:
    """Prometheus' sample value text: strconv.FormatFloat(v, 'f', -1, 64) with NaN/+Inf/-Inf."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def format_time(t_ms: int) -> float | int:
    return t_ms / 1000 if t_ms % 1000 else t_ms // 1000


def to_json(value: Value, steps_ms: np.ndarray, *, as_range: bool) -> dict:
    """Prometheus' ``data`` object for a query result."""
    if isinstance(value, StringValue):
        return {"resultType": "string", "result": [format_time(int(steps_ms[-1])), value.value]}
    if isinstance(value, Scalar):
        if not as_range:
            return {"resultType": "scalar", "result": [format_time(int(steps_ms[0])), format_value(float(value.values[0]))]}
        points = [[format_time(int(t)), format_value(float(v))] for t, v in zip(steps_ms, value.values, strict=True)]
        return {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}
    if isinstance(value, RangeVector):
        result = []
        for i, labels in enumerate(value.series):
            lo, hi = value.windows(i)
            t = value.t_ms[i][int(lo[-1]) : int(hi[-1])]
            v = value.values[i][int(lo[-1]) : int(hi[-1])]
            if len(t):
                result.append(
                    {"metric": labels, "values": [[format_time(int(a)), format_value(float(b))] for a, b in zip(t, v, strict=True)]}
                )
        return {"resultType": "matrix", "result": result}
    if not as_range:
        result = [
            {"metric": labels, "value": [format_time(int(steps_ms[0])), format_value(float(value.values[i, 0]))]}
            for i, labels in enumerate(value.series)
            if value.present[i, 0]
        ]
        return {"resultType": "vector", "result": result}
    result = []
    for i, labels in enumerate(value.series):
        idx = np.nonzero(value.present[i])[0]
        if len(idx):
            result.append(
                {
                    "metric": labels,
                    "values": [[format_time(int(steps_ms[j])), format_value(float(value.values[i, j]))] for j in idx],
                }
            )
    result.sort(key=lambda s: labels_key(s["metric"]))
    return {"resultType": "matrix", "result": result}
