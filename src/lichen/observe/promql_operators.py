"""PromQL binary operators (vector matching, set operators, ``bool``) and aggregations.

Semantics follow Prometheus 2.x ``promql/engine.go`` (VectorBinop, VectorscalarBinop,
resultMetric, aggregation): arithmetic and ``bool`` comparisons drop ``__name__``, filtering
comparisons keep the left-hand side's value, one-to-one matching with several matches is an
error, and ``group_left``/``group_right`` copy the listed labels from the "one" side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lichen.observe.promql_functions import _quantile
from lichen.observe.promql_values import InstantVector, QueryError, Scalar, drop_name, merge_same_labels
from lichen.observe.series import labels_key

ARITHMETIC = {"+", "-", "*", "/", "%", "^", "atan2"}
COMPARISON = {"==", "!=", ">", "<", ">=", "<="}
SET_OPS = {"and", "or", "unless"}
#: operators whose result drops __name__ (Prometheus' shouldDropMetricName: not atan2, not comparisons)
DROPS_NAME = {"+", "-", "*", "/", "%", "^"}


@dataclass
class Matching:
    card: str = "one-to-one"  # "one-to-one", "many-to-one", "one-to-many", "many-to-many"
    on: bool = False
    labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    return_bool: bool = False


def _apply(op: str, lhs: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise result and keep-mask (vectorElemBinop)."""
    with np.errstate(all="ignore"):
        if op == "+":
            return lhs + rhs, np.ones(lhs.shape, dtype=bool)
        if op == "-":
            return lhs - rhs, np.ones(lhs.shape, dtype=bool)
        if op == "*":
            return lhs * rhs, np.ones(lhs.shape, dtype=bool)
        if op == "/":
            return np.true_divide(lhs, rhs), np.ones(lhs.shape, dtype=bool)
        if op == "%":
            return np.fmod(lhs, rhs), np.ones(lhs.shape, dtype=bool)
        if op == "^":
            return np.power(lhs, rhs), np.ones(lhs.shape, dtype=bool)
        if op == "atan2":
            return np.arctan2(lhs, rhs), np.ones(lhs.shape, dtype=bool)
        keep = {
            "==": np.equal,
            "!=": np.not_equal,
            ">": np.greater,
            "<": np.less,
            ">=": np.greater_equal,
            "<=": np.less_equal,
        }[op](lhs, rhs)
        return np.broadcast_to(lhs, keep.shape).astype(np.float64), keep


def scalar_binop(op: str, lhs: Scalar, rhs: Scalar, return_bool: bool) -> Scalar:
    value, keep = _apply(op, lhs.values, rhs.values)
    if op in COMPARISON:
        if not return_bool:
            raise QueryError("comparisons between scalars must use BOOL modifier")
        value = keep.astype(np.float64)
    return Scalar(value)


def vector_scalar_binop(op: str, vec: InstantVector, scalar: Scalar, swap: bool, return_bool: bool) -> InstantVector:
    s = scalar.values[None, :]
    lhs, rhs = (s, vec.values) if swap else (vec.values, s)
    value, keep = _apply(op, lhs, rhs)
    value = np.broadcast_to(value, vec.values.shape)
    present = vec.present.copy()
    if op in COMPARISON:
        if return_bool:
            value = keep.astype(np.float64)
        else:
            value = vec.values.copy()
            present &= keep
    series = vec.series
    if op in DROPS_NAME or return_bool:
        series = [drop_name(s) for s in series]
    return merge_same_labels(InstantVector(list(series), np.array(value, dtype=np.float64), present))


def _signature(labels: dict[str, str], matching: Matching) -> tuple:
    if matching.on:
        return tuple(sorted((k, v) for k, v in labels.items() if k in matching.labels))
    return tuple(sorted((k, v) for k, v in labels.items() if k not in matching.labels and k != "__name__"))


def _result_metric(lhs: dict[str, str], rhs: dict[str, str], op: str, matching: Matching) -> dict[str, str]:
    out = dict(lhs)
    if op in DROPS_NAME:
        out.pop("__name__", None)
    if matching.card == "one-to-one":
        if matching.on:
            out = {k: v for k, v in out.items() if k in matching.labels}
        else:
            out = {k: v for k, v in out.items() if k not in matching.labels}
    for name in matching.include:
        if rhs.get(name, ""):
            out[name] = rhs[name]
        else:
            out.pop(name, None)
    if matching.return_bool:
        out.pop("__name__", None)
    return out


def set_binop(op: str, lhs: InstantVector, rhs: InstantVector, matching: Matching) -> InstantVector:
    steps = lhs.values.shape[1] if len(lhs) else rhs.values.shape[1]
    if op in ("and", "unless"):
        seen: dict[tuple, np.ndarray] = {}
        for i, labels in enumerate(rhs.series):
            sig = _signature(labels, matching)
            seen[sig] = seen.get(sig, np.zeros(steps, dtype=bool)) | rhs.present[i]
        present = lhs.present.copy()
        for i, labels in enumerate(lhs.series):
            hit = seen.get(_signature(labels, matching), np.zeros(steps, dtype=bool))
            present[i] &= hit if op == "and" else ~hit
        return InstantVector(list(lhs.series), lhs.values.copy(), present)
    # or
    seen = {}
    for i, labels in enumerate(lhs.series):
        sig = _signature(labels, matching)
        seen[sig] = seen.get(sig, np.zeros(steps, dtype=bool)) | lhs.present[i]
    rhs_present = rhs.present.copy()
    for i, labels in enumerate(rhs.series):
        rhs_present[i] &= ~seen.get(_signature(labels, matching), np.zeros(steps, dtype=bool))
    if not len(lhs):
        return InstantVector(list(rhs.series), rhs.values.copy(), rhs_present)
    if not len(rhs):
        return lhs
    return merge_same_labels(
        InstantVector(
            list(lhs.series) + list(rhs.series),
            np.concatenate([lhs.values, rhs.values]),
            np.concatenate([lhs.present, rhs_present]),
        )
    )


def vector_binop(op: str, lhs: InstantVector, rhs: InstantVector, matching: Matching) -> InstantVector:
    """Arithmetic or comparison between two instant vectors with vector matching."""
    steps = lhs.values.shape[1]  # an empty vector still has one column per step
    if not len(lhs) or not len(rhs):
        return InstantVector.empty(steps)
    swapped = matching.card == "one-to-many"
    many, one = (rhs, lhs) if swapped else (lhs, rhs)
    one_by_sig: dict[tuple, list[int]] = {}
    for i, labels in enumerate(one.series):
        one_by_sig.setdefault(_signature(labels, matching), []).append(i)
    both_sides = lhs.present.any(axis=0) & rhs.present.any(axis=0)  # at a step where a side is empty, nothing can match
    for sig, members in one_by_sig.items():
        if len(members) > 1 and np.any((one.present[members].sum(axis=0) > 1) & both_sides):
            side = "left" if swapped else "right"
            raise QueryError(
                f"found duplicate series for the match group {dict(sig)} on the {side} hand-side of the operation; "
                "many-to-many matching not allowed: matching labels must be unique on one side"
            )
    out_series: list[dict[str, str]] = []
    out_values: list[np.ndarray] = []
    out_present: list[np.ndarray] = []
    matched_count: dict[tuple, np.ndarray] = {}
    for i, labels in enumerate(many.series):
        sig = _signature(labels, matching)
        for j in one_by_sig.get(sig, ()):
            both = many.present[i] & one.present[j]
            if not both.any():
                continue
            vl, vr = (one.values[j], many.values[i]) if swapped else (many.values[i], one.values[j])
            value, keep = _apply(op, vl, vr)
            if matching.return_bool:
                value = keep.astype(np.float64)
                present = both
            else:
                present = both & keep
            if not present.any():
                continue
            metric = _result_metric(labels, one.series[j], op, matching)
            if matching.card == "one-to-one":
                count = matched_count.setdefault(sig, np.zeros(steps, dtype=int))
                count += present
                if np.any(count > 1):
                    raise QueryError("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
            else:
                key = (sig, labels_key(metric))
                count = matched_count.setdefault(key, np.zeros(steps, dtype=int))
                count += present
                if np.any(count > 1):
                    raise QueryError("multiple matches for labels: grouping labels must ensure unique matches")
            out_series.append(metric)
            out_values.append(np.asarray(value, dtype=np.float64))
            out_present.append(present)
    if not out_series:
        return InstantVector.empty(steps)
    return merge_same_labels(InstantVector(out_series, np.array(out_values), np.array(out_present, dtype=bool)))


# ------------------------------------------------------------------------ aggregation


def aggregate(op: str, vec: InstantVector, grouping: tuple[str, ...], without: bool, param: Scalar | None) -> InstantVector:
    steps = vec.values.shape[1]
    groups: dict[object, tuple[dict[str, str], list[int]]] = {}
    dropped = set(grouping) | {"__name__"}
    for i, labels in enumerate(vec.series):
        if without:
            out = {k: v for k, v in labels.items() if k not in dropped}
            key: object = frozenset(out.items())
        else:
            key = tuple(labels.get(g, "") for g in grouping)
            entry = groups.get(key)
            if entry is not None:
                entry[1].append(i)
                continue
            out = {k: v for k, v in labels.items() if k in grouping}
        groups.setdefault(key, (out, []))[1].append(i)
    if op in ("topk", "bottomk"):
        return _topk(op, vec, groups, param, steps)
    series, values, present = [], [], []
    for out, members in groups.values():
        vals = vec.values[members]
        mask = vec.present[members]
        any_present = mask.any(axis=0)
        if not any_present.any():
            continue
        if op == "sum":
            result = np.where(mask, vals, 0.0).sum(axis=0)
        elif op == "count":
            result = mask.sum(axis=0).astype(np.float64)
        elif op == "group":
            result = np.ones(steps)
        elif op in ("avg", "stddev", "stdvar"):
            count = np.zeros(steps)
            mean = np.zeros(steps)
            aux = np.zeros(steps)
            with np.errstate(all="ignore"):
                for row, m in zip(vals, mask, strict=True):
                    count = count + m
                    c = np.where(count == 0, 1, count)
                    if op == "avg":  # Prometheus: an infinite mean stays put for finite or same-signed infinite samples
                        first = m & (count == 1)
                        keep = np.isinf(mean) & ((np.isinf(row) & (np.sign(mean) == np.sign(row))) | np.isfinite(row))
                        mean = np.where(first, row, np.where(m & ~keep, mean + row / c - mean / c, mean))
                    else:  # the first sample only sets the mean, as Prometheus does (so stdvar({Inf}) is 0)
                        first = m & (count == 1)
                        delta = row - mean
                        new_mean = np.where(first, row, mean + delta / c)
                        aux = np.where(m & ~first, aux + delta * (row - new_mean), aux)
                        mean = np.where(m, new_mean, mean)
                if op == "avg":
                    result = mean
                else:
                    result = aux / np.where(count == 0, 1, count)
                    if op == "stddev":
                        result = np.sqrt(result)
        elif op in ("min", "max"):
            result = np.full(steps, np.nan)
            started = np.zeros(steps, dtype=bool)
            for row, m in zip(vals, mask, strict=True):
                better = (row < result) if op == "min" else (row > result)
                take = m & (~started | better | np.isnan(result))
                result = np.where(take, row, result)
                started |= m
        elif op == "quantile":
            assert param is not None
            result = np.zeros(steps)
            for j in np.nonzero(any_present)[0]:
                result[j] = _quantile(float(param.values[j]), vals[mask[:, j], j].tolist())
        else:
            raise QueryError(f"aggregation {op}() is not supported")
        series.append(out)
        values.append(result)
        present.append(any_present)
    if not series:
        return InstantVector.empty(steps)
    return InstantVector(series, np.array(values), np.array(present, dtype=bool))


def _topk(op: str, vec: InstantVector, groups: dict, param: Scalar | None, steps: int) -> InstantVector:
    assert param is not None
    k = param.values
    present = np.zeros(vec.present.shape, dtype=bool)
    listing: list[int] = []  # an instant query lists each group's choices best first, as Prometheus does
    for _out, members in groups.values():
        vals = vec.values[members]
        mask = vec.present[members]
        key = np.where(np.isnan(vals), -math.inf if op == "topk" else math.inf, vals)
        primary = -key if op == "topk" else key
        order = np.lexsort((primary, ~mask), axis=0)
        ranks = np.empty_like(order)
        rows = np.arange(len(members))[:, None]
        np.put_along_axis(ranks, order, np.broadcast_to(rows, order.shape), axis=0)
        with np.errstate(invalid="ignore"):
            limit = np.where(np.isnan(k), 0, np.floor(k)).astype(np.int64)
        chosen = mask & (ranks < limit[None, :])
        present[members] = chosen
        if steps == 1:
            listing.extend(members[i] for i in sorted(np.nonzero(chosen[:, 0])[0], key=lambda i: ranks[i, 0]))
    if steps == 1:
        return InstantVector([vec.series[i] for i in listing], vec.values[listing], present[listing])
    return InstantVector(list(vec.series), vec.values.copy(), present)
