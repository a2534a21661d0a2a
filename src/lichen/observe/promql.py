"""PromQL evaluation over the embedded series store.

Interface (stable; used by the rules, the HTTP API, the dashboard and the controller):

* ``Engine(store, lookback_s=300.0, subquery_step_s=60.0)``
* ``engine.instant(expr, t_s) -> dict`` — Prometheus' ``data`` object
  (``{"resultType": "vector"|"scalar"|"matrix"|"string", "result": [...]}``).
* ``engine.range(expr, start_s, end_s, step_s) -> dict`` — ``{"resultType": "matrix", ...}``.
* ``engine.instant_samples(expr, t_s) -> list[tuple[dict[str, str], float]]`` — the plain
  sample list rule evaluation needs (a scalar becomes one sample with no labels).
* ``parse_expr(text) -> promql_parser.Expr`` — parse and check support; raises
  :class:`QueryError` naming the construct and its position.
* ``parse_promql(text) -> promql_parser.Expr`` — only parse (any PromQL, e.g. a ``match[]`` selector);
  every caller parses through it, never ``promql_parser.parse``: it refuses an expression nested deeper
  than :data:`MAX_NESTING`, which would overflow the parser's stack and kill the process.

Expressions are parsed by the ``promql-parser`` package. Supported: vector and matrix selectors
with every matcher type and ``offset``; the functions in
:data:`lichen.observe.promql_functions.FUNCTIONS`; the aggregations sum, avg, min, max, count,
group, topk, bottomk, quantile, stddev, stdvar and count_values with ``by``/``without``; arithmetic,
comparison (with ``bool``) and set operators with ``on``/``ignoring`` and
``group_left``/``group_right``. Staleness and lookback follow Prometheus 2.x: a selector sees
the newest sample at most ``lookback_s`` old (inclusive), unless it is a stale marker; ranges are
closed ``[t - range, t]``. Subqueries ``expr[range:step]`` evaluate ``expr`` at multiples of ``step``
(default ``subquery_step_s``); ``@ t``, ``@ start()`` and ``@ end()`` pin a selector or subquery.
Other functions raise :class:`QueryError`.
"""

from __future__ import annotations

import contextvars
import math
import re
from datetime import timedelta

import numpy as np
import promql_parser as pp

from lichen.observe.promql_functions import FUNCTIONS, Arguments
from lichen.observe.promql_operators import (
    ARITHMETIC,
    COMPARISON,
    SET_OPS,
    Matching,
    aggregate,
    scalar_binop,
    set_binop,
    vector_binop,
    vector_scalar_binop,
)
from lichen.observe.promql_values import (
    InstantVector,
    QueryError,
    RangeVector,
    Scalar,
    StringValue,
    Value,
    drop_name,
    merge_same_labels,
    to_json,
)
from lichen.observe.series import LabelMatcher, SeriesStore, stale_mask

__all__ = ["Engine", "QueryError", "parse_expr", "parse_promql"]

MAX_POINTS = 11_000
#: the running query's first and last step (ms) for @ start()/end(); a context variable, so queries
#: evaluated at once in several threads (the HTTP API) do not see each other's
_BOUNDS_MS: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("promql_bounds_ms", default=(0, 0))
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values"}
_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _format_f(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, never an exponent."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def _ms(delta: timedelta | None) -> int:
    if delta is None:
        return 0
    return int(round(delta.total_seconds() * 1000))


def _position(text: str, needle: str) -> str:
    at = text.find(needle)
    return f" at position {at + 1}" if at >= 0 else ""


def _check(node: pp.Expr, text: str) -> None:
    """Reject constructs this engine does not implement, naming them and where they are."""
    if isinstance(node, pp.SubqueryExpr):
        _check(node.expr, text)
        return
    if isinstance(node, (pp.VectorSelector, pp.MatrixSelector)):
        vs = node.vector_selector if isinstance(node, pp.MatrixSelector) else node
        if vs.matchers.or_matchers:
            raise QueryError(f"'or' inside label matchers ({vs}) is not supported{_position(text, ' or ')}")
        return
    if isinstance(node, pp.Call):
        name = node.func.name
        if name not in FUNCTIONS:
            raise QueryError(f"function {name}() is not supported{_position(text, name + '(')}")
        for arg in node.args:
            _check(arg, text)
        return
    if isinstance(node, pp.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS:
            raise QueryError(f"aggregation {op}() is not supported{_position(text, op)}")
        _check(node.expr, text)
        if node.param is not None:
            _check(node.param, text)
        return
    if isinstance(node, pp.BinaryExpr):
        op = str(node.op)
        if op not in ARITHMETIC | COMPARISON | SET_OPS:
            raise QueryError(f"operator {op} is not supported{_position(text, op)}")
        _check(node.lhs, text)
        _check(node.rhs, text)
        return
    if isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
        _check(node.expr, text)
        return
    if isinstance(node, (pp.NumberLiteral, pp.StringLiteral)):
        return
    raise QueryError(f"expression {node} is not supported")


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


_HOLT_WINTERS = re.compile(r"\bholt_winters\s*\(")


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_UNITLESS = re.compile(r"\[\s*[0-9.]+\s*[\]:]|:\s*[0-9.]+\s*\]|\boffset\s+-?[0-9.]+(?![0-9.]*[a-zA-Z])")


def _check_duration_units(text: str) -> None:
    """Prometheus 2.x wants a unit in every range, subquery step and offset (promql-parser takes seconds)."""
    m = _UNITLESS.search(_STRINGS.sub(lambda s: '"' + " " * (len(s.group(0)) - 2) + '"', text))
    if m:
        raise QueryError(f"missing unit character in duration {m.group(0).strip('[]: ')!r} at position {m.start() + 1}")


def _rename_holt_winters(text: str) -> str:
    """holt_winters( -> double_exponential_smoothing( outside string literals."""
    out, pos = [], 0
    for m in _STRINGS.finditer(text):
        out.append(_HOLT_WINTERS.sub("double_exponential_smoothing(", text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_HOLT_WINTERS.sub("double_exponential_smoothing(", text[pos:]))
    return "".join(out)


MAX_NESTING = 200
"""The deepest expression accepted: promql-parser overflows its stack (killing the process) near 4,500 levels,
and the engine recurses once or twice per level; real rules nest a few dozen deep at most."""
_NESTING_TOKENS = re.compile(r"[(\[{]|[)\]}]|\b(?:and|or|unless|atan2)\b|==|!=|<=|>=|[-+*/%^<>]")


def nesting_depth(text: str) -> int:
    """An upper bound on how deep ``text`` parses: brackets, plus every operator inside each enclosing bracket.

    A chain ``a + b + c`` parses into nested binary expressions, so each operator
    counts as a level within its bracket; string literals count nothing.
    """
    groups, total, deepest = [0], 1, 1
    for token in _NESTING_TOKENS.finditer(_STRINGS.sub('""', text)):
        part = token.group()
        if part in "([{":
            groups.append(0)
            total += 1
        elif part in ")]}":
            if len(groups) > 1:
                total -= 1 + groups.pop()
        else:
            groups[-1] += 1
            total += 1
        deepest = max(deepest, total)
    return deepest


def parse_promql(text: str) -> pp.Expr:
    """``promql_parser.parse`` that only raises :class:`QueryError`: too deep, a syntax error or a parser panic."""
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise QueryError(f"the expression nests about {depth} levels deep (parentheses and operators); at most "
                         f"{MAX_NESTING} are allowed: split it, e.g. into recording rules")
    try:  # Prometheus 2.x's holt_winters is double_exponential_smoothing to promql-parser
        return pp.parse(_rename_holt_winters(text) if "holt_winters" in text else text)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"cannot parse PromQL {text!r}: {exc}") from None
    except BaseException as exc:  # a panic inside promql-parser is a BaseException; it must not kill the caller
        if not _is_panic(exc):
            raise
        raise QueryError(f"cannot parse PromQL {text!r}: the parser failed ({exc})") from None


def parse_expr(text: str) -> pp.Expr:
    """Parse a PromQL expression and check that this engine supports every construct in it."""
    _check_duration_units(text)
    node = parse_promql(text)
    _check(node, text)
    return node


def _matchers(vs: pp.VectorSelector) -> list[LabelMatcher]:
    out = []
    if vs.name:
        out.append(LabelMatcher("__name__", "=", vs.name))
    for m in vs.matchers.matchers:
        out.append(LabelMatcher(m.name, _MATCH_OPS[str(m.op)], m.value))
    return out


def _matching(node: pp.BinaryExpr) -> Matching:
    mod = node.modifier
    if mod is None:
        return Matching()
    card = {
        "VectorMatchCardinality.OneToOne": "one-to-one",
        "VectorMatchCardinality.ManyToOne": "many-to-one",
        "VectorMatchCardinality.OneToMany": "one-to-many",
        "VectorMatchCardinality.ManyToMany": "many-to-many",
    }[str(mod.card)]
    on = False
    labels: tuple[str, ...] = ()
    if mod.matching is not None:
        on = str(mod.matching.type) == "LabelModifierType.Include"
        labels = tuple(mod.matching.labels)
    include = tuple(mod.group_labels or ()) if card in ("many-to-one", "one-to-many") else ()
    return Matching(card=card, on=on, labels=labels, include=include, return_bool=bool(mod.return_bool))


class Engine:
    """Evaluates PromQL against a :class:`SeriesStore`."""

    def __init__(self, store: SeriesStore, lookback_s: float = 300.0, subquery_step_s: float = 60.0) -> None:
        self.store = store
        self.lookback_ms = int(lookback_s * 1000)
        self.subquery_step_ms = int(subquery_step_s * 1000)  # a subquery without a step uses this (Prometheus: evaluation_interval)
        self._parsed: dict[str, pp.Expr] = {}

    # ----------------------------------------------------------------- public

    def parse(self, expr: str) -> pp.Expr:
        node = self._parsed.get(expr)
        if node is None:
            node = parse_expr(expr)
            if len(self._parsed) > 4096:
                self._parsed.clear()
            self._parsed[expr] = node
        return node

    def evaluate(self, expr: str, steps_ms: np.ndarray) -> Value:
        node = self.parse(expr)
        steps = np.asarray(steps_ms, dtype=np.int64)
        _BOUNDS_MS.set((int(steps[0]), int(steps[-1])))  # what @ start() and @ end() mean
        return self._eval(node, steps)

    def _at(self, at: object, steps: np.ndarray) -> np.ndarray:
        """The times a selector or subquery reads at: each step's, or the one its @ modifier names."""
        if at is None:
            return steps
        kind = str(at.type)  # type: ignore[attr-defined]
        if kind.endswith("Start"):
            fixed = _BOUNDS_MS.get()[0]
        elif kind.endswith("End"):
            fixed = _BOUNDS_MS.get()[1]
        else:
            try:
                moment = at.at  # type: ignore[attr-defined]
            except ValueError:
                raise QueryError("timestamp out of bounds for @ modifier") from None
            except BaseException as exc:  # promql-parser panics (a BaseException) on times before 1970
                if not _is_panic(exc):
                    raise
                raise QueryError("an @ time before 1970 is not supported") from None
            fixed = int(round(moment.timestamp() * 1000))
        return np.full(len(steps), fixed, dtype=np.int64)

    def instant(self, expr: str, t_s: float) -> dict:
        steps = np.array([int(round(t_s * 1000))], dtype=np.int64)
        return to_json(self.evaluate(expr, steps), steps, as_range=False)

    def range(self, expr: str, start_s: float, end_s: float, step_s: float) -> dict:
        if step_s <= 0:
            raise QueryError("zero or negative query resolution step widths are not accepted. Try a positive integer")
        if end_s < start_s:
            raise QueryError("end timestamp must not be before start time")
        start_ms, end_ms, step_ms = int(round(start_s * 1000)), int(round(end_s * 1000)), int(round(step_s * 1000))
        if step_ms <= 0:  # steps are whole milliseconds; a smaller one would divide by zero
            raise QueryError("the query resolution step is under a millisecond; use a step of at least 0.001 s")
        count = (end_ms - start_ms) // step_ms + 1
        if count > MAX_POINTS:
            raise QueryError("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
        steps = start_ms + step_ms * np.arange(count, dtype=np.int64)
        node = self.parse(expr)
        _BOUNDS_MS.set((int(steps[0]), int(steps[-1])))
        ranged = (pp.MatrixSelector, pp.SubqueryExpr)
        if isinstance(node, ranged) or (isinstance(node, pp.ParenExpr) and isinstance(node.expr, ranged)):
            raise QueryError("invalid expression type \"range vector\" for range query, must be Scalar or instant Vector")
        value = self._eval(node, steps)
        if isinstance(value, StringValue):
            raise QueryError("invalid expression type \"string\" for range query, must be Scalar or instant Vector")
        return to_json(value, steps, as_range=True)

    def instant_samples(self, expr: str, t_s: float) -> list[tuple[dict[str, str], float]]:
        steps = np.array([int(round(t_s * 1000))], dtype=np.int64)
        value = self.evaluate(expr, steps)
        if isinstance(value, Scalar):
            return [({}, float(value.values[0]))]
        if isinstance(value, InstantVector):
            return [(dict(s), float(value.values[i, 0])) for i, s in enumerate(value.series) if value.present[i, 0]]
        raise QueryError(f"expression {expr!r} returns a {type(value).__name__}, not an instant vector or scalar")

    # --------------------------------------------------------------- internals

    def _eval(self, node: pp.Expr, steps: np.ndarray) -> Value:
        n = len(steps)
        if isinstance(node, pp.NumberLiteral):
            return Scalar(np.full(n, float(node.val)))
        if isinstance(node, pp.StringLiteral):
            return StringValue(node.val)
        if isinstance(node, pp.ParenExpr):
            return self._eval(node.expr, steps)
        if isinstance(node, pp.UnaryExpr):
            inner = self._eval(node.expr, steps)
            if isinstance(inner, Scalar):
                return Scalar(-inner.values)
            if isinstance(inner, InstantVector):
                return merge_same_labels(InstantVector([drop_name(s) for s in inner.series], -inner.values, inner.present.copy()))
            raise QueryError(f"unary minus is not defined on {type(inner).__name__}")
        if isinstance(node, pp.VectorSelector):
            return self._vector_selector(node, steps)
        if isinstance(node, pp.MatrixSelector):
            return self._matrix_selector(node, steps)
        if isinstance(node, pp.SubqueryExpr):
            return self._subquery(node, steps)
        if isinstance(node, pp.Call):
            return self._call(node, steps)
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node, steps)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node, steps)
        raise QueryError(f"expression {node} is not supported")

    def _vector_selector(self, vs: pp.VectorSelector, steps: np.ndarray, sample_times: bool = False) -> InstantVector:
        """The newest sample within the lookback at each step; ``sample_times``: its timestamp in seconds instead."""
        offset = _ms(vs.offset)
        ref = self._at(vs.at, steps) - offset
        dicts, t, v, lengths = self.store.select_flat(_matchers(vs), int(ref[0]) - self.lookback_ms, int(ref[-1]))
        n = len(steps)
        if not dicts:
            return InstantVector.empty(n)
        # one searchsorted for every series and step: series i's samples are keyed i * span + (t - base)
        base = int(min(int(t.min()), int(ref.min()))) - 1
        span = int(max(int(t.max()), int(ref.max())) - base + 1)
        series_idx = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        key = series_idx * span + (t - base)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        rows = (np.arange(len(lengths), dtype=np.int64) * span)[:, None]
        idx = np.searchsorted(key, rows + (ref - base)[None, :], side="right") - 1
        ok = idx >= starts[:, None]
        safe = np.where(ok, idx, 0)
        ok &= t[safe] >= (ref - self.lookback_ms)[None, :]
        values = v[safe]
        ok &= ~stale_mask(values)
        if sample_times:
            values = t[safe].astype(np.float64) / 1000.0
        keep = ok.any(axis=1)
        if keep.all():
            return InstantVector(dicts, values, ok)
        return InstantVector([s for s, k in zip(dicts, keep, strict=True) if k], values[keep], ok[keep])

    def _matrix_selector(self, ms: pp.MatrixSelector, steps: np.ndarray) -> RangeVector:
        vs = ms.vector_selector
        offset = _ms(vs.offset)
        range_ms = _ms(ms.range)
        steps = self._at(vs.at, steps)
        dicts, t, v, lengths = self.store.select_flat(_matchers(vs), int(steps[0]) - offset - range_ms, int(steps[-1]) - offset)
        stale = stale_mask(v)
        if stale.any():  # stale markers are not samples of a range
            fresh = ~stale
            series_idx = np.repeat(np.arange(len(lengths)), lengths)
            lengths = np.bincount(series_idx[fresh], minlength=len(lengths)).astype(np.int64)
            t, v = t[fresh], v[fresh]
            if not lengths.all():
                dicts = [d for d, n in zip(dicts, lengths, strict=True) if n]
                lengths = lengths[lengths > 0]
        out = RangeVector.from_flat(dicts, t, v, lengths, range_ms, offset, steps, str(ms))
        out.equality_labels = {m.name: m.value for m in _matchers(vs) if m.op == "=" and m.name != "__name__"}
        return out

    def _subquery(self, node: pp.SubqueryExpr, steps: np.ndarray) -> RangeVector:
        """``expr[range:step] offset o``: ``expr`` at every multiple of ``step``, read back like a range selector."""
        range_ms, offset_ms = _ms(node.range), _ms(node.offset)
        step_ms = _ms(node.step) or self.subquery_step_ms
        steps = self._at(node.at, steps)
        first = int(steps[0]) - offset_ms - range_ms
        start = (first // step_ms) * step_ms
        if start < first:
            start += step_ms
        inner_steps = np.arange(start, int(steps[-1]) - offset_ms + 1, step_ms, dtype=np.int64)
        if len(inner_steps) > MAX_POINTS * 10:
            raise QueryError(f"subquery {node} would evaluate {len(inner_steps)} steps; use a larger subquery step")
        inner = self._eval(node.expr, inner_steps) if len(inner_steps) else InstantVector.empty(0)
        if not isinstance(inner, InstantVector):
            raise QueryError(f"subquery is only allowed on an instant vector, got {type(inner).__name__} ({node})")
        keep = [i for i in range(len(inner.series)) if inner.present[i].any()]
        lengths = np.array([int(inner.present[i].sum()) for i in keep], dtype=np.int64)
        t_all = np.concatenate([inner_steps[inner.present[i]] for i in keep]) if keep else np.empty(0, np.int64)
        v_all = np.concatenate([inner.values[i][inner.present[i]] for i in keep]) if keep else np.empty(0)
        return RangeVector.from_flat([inner.series[i] for i in keep], t_all, v_all, lengths, range_ms, offset_ms, steps, str(node))

    def _call(self, node: pp.Call, steps: np.ndarray) -> Value:
        name = node.func.name
        function = FUNCTIONS[name]
        if function.apply is None:  # timestamp(): the engine reads a selector's sample times itself
            return self._timestamp(node, steps)
        arg_types = function.arg_types
        arg_nodes = list(node.args)
        if function.variadic:
            arg_types = arg_types + (arg_types[-1],) * max(0, len(arg_nodes) - len(arg_types))
        if not (len(arg_types) - function.optional_args <= len(arg_nodes) <= len(arg_types)):
            raise QueryError(f"function {name}() expects {len(arg_types)} argument(s), got {len(arg_nodes)}")
        args: list[Value] = []
        for expected, arg in zip(arg_types, arg_nodes, strict=False):
            value = self._eval(arg, steps)
            if not isinstance(value, expected):
                raise QueryError(f"function {name}() expects a {expected.__name__} as argument, got {type(value).__name__} ({arg})")
            args.append(value)
        return function.apply(Arguments(args, arg_nodes, steps))

    def _timestamp(self, node: pp.Call, steps: np.ndarray) -> InstantVector:
        """timestamp(v): a selector's sample times; any other expression's samples carry the step time (Prometheus 2.x)."""
        if len(node.args) != 1:
            raise QueryError(f"function timestamp() expects 1 argument(s), got {len(node.args)}")
        arg = node.args[0]
        while isinstance(arg, pp.ParenExpr):
            arg = arg.expr
        if isinstance(arg, pp.VectorSelector):
            vec = self._vector_selector(arg, steps, sample_times=True)
        else:
            vec = self._eval(arg, steps)
            if not isinstance(vec, InstantVector):
                raise QueryError(f"function timestamp() expects a InstantVector as argument, got {type(vec).__name__} ({arg})")
            vec = InstantVector(vec.series, np.broadcast_to(steps.astype(np.float64) / 1000.0, vec.values.shape).copy(), vec.present)
        return merge_same_labels(InstantVector([drop_name(s) for s in vec.series], vec.values, vec.present.copy()))

    def _aggregate(self, node: pp.AggregateExpr, steps: np.ndarray) -> InstantVector:
        op = str(node.op)
        param = None
        if op == "count_values":
            return self._count_values(node, steps)
        if node.param is not None:
            param = self._eval(node.param, steps)
            if not isinstance(param, Scalar):
                raise QueryError(f"{op}() expects a scalar parameter, got {type(param).__name__}")
        inner = self._eval(node.expr, steps)
        if not isinstance(inner, InstantVector):
            raise QueryError(f"{op}() expects an instant vector, got {type(inner).__name__}")
        grouping: tuple[str, ...] = ()
        without = False
        if node.modifier is not None:
            grouping = tuple(node.modifier.labels)
            without = str(node.modifier.type) == "AggModifierType.Without"
        return aggregate(op, inner, grouping, without, param)

    def _count_values(self, node: pp.AggregateExpr, steps: np.ndarray) -> InstantVector:
        """count_values("label", v): how many series have each value, the value (Go's %v) in ``label``."""
        label = self._eval(node.param, steps) if node.param is not None else None
        if not isinstance(label, StringValue):
            raise QueryError("count_values() expects a string parameter")
        if not LABEL_NAME_RE.fullmatch(label.value):
            raise QueryError(f'invalid label name "{label.value}"')
        inner = self._eval(node.expr, steps)
        if not isinstance(inner, InstantVector):
            raise QueryError(f"count_values() expects an instant vector, got {type(inner).__name__}")
        grouping = tuple(node.modifier.labels) if node.modifier is not None else ()
        without = node.modifier is not None and str(node.modifier.type) == "AggModifierType.Without"
        counts: dict[tuple, np.ndarray] = {}
        for i, labels in enumerate(inner.series):
            if without:
                base = {k: v for k, v in labels.items() if k not in grouping and k != "__name__"}
            else:
                base = {k: v for k, v in labels.items() if k in grouping}
            for j in np.nonzero(inner.present[i])[0]:
                out = dict(base)
                out[label.value] = _format_f(float(inner.values[i, j]))
                key = tuple(sorted(out.items()))
                counts.setdefault(key, np.zeros(len(steps)))[j] += 1
        if not counts:
            return InstantVector.empty(len(steps))
        keys = list(counts)
        values = np.array([counts[k] for k in keys])
        return InstantVector([dict(k) for k in keys], values, values > 0)

    def _binary(self, node: pp.BinaryExpr, steps: np.ndarray) -> Value:
        op = str(node.op)
        matching = _matching(node)
        lhs = self._eval(node.lhs, steps)
        rhs = self._eval(node.rhs, steps)
        if op in SET_OPS:
            if not (isinstance(lhs, InstantVector) and isinstance(rhs, InstantVector)):
                raise QueryError(f"set operator {op} not allowed in binary scalar expression")
            return set_binop(op, lhs, rhs, matching)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            return scalar_binop(op, lhs, rhs, matching.return_bool)
        if isinstance(lhs, InstantVector) and isinstance(rhs, Scalar):
            return vector_scalar_binop(op, lhs, rhs, swap=False, return_bool=matching.return_bool)
        if isinstance(lhs, Scalar) and isinstance(rhs, InstantVector):
            return vector_scalar_binop(op, rhs, lhs, swap=True, return_bool=matching.return_bool)
        if isinstance(lhs, InstantVector) and isinstance(rhs, InstantVector):
            return vector_binop(op, lhs, rhs, matching)
        raise QueryError(f"binary operator {op} is not defined between {type(lhs).__name__} and {type(rhs).__name__}")
