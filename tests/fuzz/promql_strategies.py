"""Hypothesis strategies for PromQL: a typed grammar (most queries parse and evaluate) and odd or broken variants."""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from lichen.observe.promql_functions import FUNCTIONS

# ------------------------------------------------------------------ the grammar
# A typed grammar: each function and aggregation gets arguments of the types its signature asks for,
# so most generated queries parse and evaluate; odd pieces (bad names, matchers, durations, functions
# the engine lacks) and broken characters then reach the error paths.

metric = st.sampled_from(["up", "req_total", "lat_bucket", "inflight", "nothing", "a:b"])
odd_metric = st.sampled_from(["sum", "by", "offset", "nan", "inf", "__name__", "0up"])
label = st.sampled_from(["job", "instance", "le", "__name__"])
odd_label = st.sampled_from(["0bad", "on", "by", "x-y", ""])
label_value = st.sampled_from(["api", "", "a:1", "0.5", "+Inf", ".*", "a|b", "(", "[", "\\\\", "\\\"", "ü", "$1"])
match_op = st.sampled_from(["=", "!=", "=~", "!~"])
odd_match_op = st.sampled_from(["==", "~", "=!"])
duration = st.sampled_from(["1m", "5m", "30s", "1h", "1ms", "15s", "2d", "1y", "1h30m", "10000d", "1w"])
odd_duration = st.sampled_from(["0s", "90", "1.5m", "-1m", "5M", "999999999999s", "99999999999y", "1h1h", "s"])
number = st.sampled_from(["0", "1", "-1", "0.5", "1e3", "1e308", "1e309", "-1e400", "NaN", "Inf", "-Inf", "0x1f",
                          "0.999999999", "100", "3", "12345678901234567890", "0.9"])
string = st.sampled_from(['"job"', '"x"', '"$1"', '"(.*):.*"', '"("', "'a'", "`raw`", '""', '"le"', '"__name__"', '"-"'])
arithmetic = st.sampled_from(["+", "-", "*", "/", "%", "^", "atan2"])
comparison = st.sampled_from(["==", "!=", ">", "<", ">=", "<="])
set_op = st.sampled_from(["and", "or", "unless"])
matching = st.sampled_from(["", "", "on(job)", "ignoring(instance)", "on(job) group_left", "on() group_right(job)",
                            "ignoring(le) group_left(le)", "on(instance)"])
vector_aggregation = st.sampled_from(["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"])
grouping = st.sampled_from(["", "by (job)", "without (instance)", "by ()", "by (le, job)", "without ()"])
at_modifier = st.sampled_from([" @ 1700000000", " @ start()", " @ end()", " @ -1", " @ 1e20", " @ 0", " @ 1699999900.5"])

_KINDS = {"InstantVector": "vector", "RangeVector": "matrix", "Scalar": "scalar", "StringValue": "string"}
SCALAR_FUNCTIONS = {"time", "pi", "scalar"}


@st.composite
def selector(draw: st.DrawFn, odd: bool = False) -> str:
    pick = (lambda good, bad: st.one_of(good, good, good, bad)) if odd else (lambda good, _bad: good)
    matchers = draw(st.lists(st.builds(lambda k, o, v: f'{k}{o}"{v}"', pick(label, odd_label), pick(match_op, odd_match_op),
                                       label_value), max_size=2))
    name = draw(st.one_of(pick(metric, odd_metric), st.just(""))) if matchers else draw(pick(metric, odd_metric))
    text = name + ("{" + ",".join(matchers) + "}" if matchers else "")
    if draw(st.integers(0, 3)) == 0:
        text += f" offset {draw(pick(duration, odd_duration))}"
    if draw(st.integers(0, 5)) == 0:
        text += draw(at_modifier)
    return text


@functools.cache
def of_kind(kind: str, depth: int) -> st.SearchStrategy[str]:
    """Expressions that evaluate to ``kind`` (vector, matrix, scalar, string), at most ``depth`` levels deep."""
    if kind == "string":
        return string
    if kind == "matrix":
        ranged = st.builds(lambda s, d: f"{s}[{d}]", selector(), duration)
        if depth == 0:
            return ranged
        subquery = st.builds(lambda e, r, s: f"({e})[{r}:{s}]", of_kind("vector", depth - 1), duration,
                             st.sampled_from(["", "1m", "30s", "1h", "5m"]))
        return st.one_of(ranged, ranged, subquery)
    if kind == "scalar" and depth == 0:
        return number
    if kind == "vector" and depth == 0:
        return selector()
    below = depth - 1
    if kind == "scalar":
        return st.one_of(
            number, number,
            st.builds(lambda a, op, b: f"{a} {op} {b}", of_kind("scalar", below), arithmetic, of_kind("scalar", below)),
            st.builds(lambda a, b: f"{a} > bool {b}", of_kind("scalar", below), of_kind("scalar", below)),
            st.builds(lambda e: f"({e})", of_kind("scalar", below)),
            st.builds(lambda e: f"-{e}", of_kind("scalar", below)),
            st.sampled_from(["time()", "pi()"]),
            st.builds(lambda e: f"scalar({e})", of_kind("vector", below)),
        )
    vector = of_kind("vector", below)
    return st.one_of(
        selector(),
        st.builds(lambda a, op, m, b: f"{a} {op} {m} {b}", vector, arithmetic, matching, vector),
        st.builds(lambda a, op, b: f"{a} {op} {b}", vector, st.one_of(arithmetic, comparison), of_kind("scalar", below)),
        st.builds(lambda a, op, b: f"{a} {op} {b}", of_kind("scalar", below), st.one_of(arithmetic, comparison), vector),
        st.builds(lambda a, op, m, b: f"{a} {op} bool {m} {b}", vector, comparison, matching, vector),
        st.builds(lambda a, op, m, b: f"{a} {op} {m} {b}", vector, set_op, st.sampled_from(["", "on(job)", "ignoring(le)"]),
                  vector),
        st.builds(lambda a, g, e: f"{a} {g} ({e})", vector_aggregation, grouping, vector),
        st.builds(lambda a, g, k, e: f"{a} {g} ({k}, {e})", st.sampled_from(["topk", "bottomk", "quantile"]), grouping,
                  of_kind("scalar", below), vector),
        st.builds(lambda g, s, e: f"count_values {g} ({s}, {e})", grouping, string, vector),
        st.builds(lambda e: f"({e})", vector),
        st.builds(lambda e: f"-{e}", vector),
        function_call(below),
    )


def function_call(depth: int) -> st.SearchStrategy[str]:
    calls = []
    for name, function in sorted(FUNCTIONS.items()):
        if name in SCALAR_FUNCTIONS:
            continue
        kinds = [_KINDS[kind.__name__] for kind in function.arg_types]
        if function.variadic:
            kinds.append(kinds[-1])
        argument_lists = st.tuples(*(of_kind(kind, depth) for kind in kinds))
        least = len(kinds) - function.optional_args - (1 if function.variadic else 0)
        calls.append(st.builds(lambda args, n, name=name: f"{name}({', '.join(args[:n])})", argument_lists,
                               st.integers(max(least, 0), len(kinds))))
    return st.one_of(calls)


typed = of_kind("vector", 3) | of_kind("scalar", 2)


def odd_expressions() -> st.SearchStrategy[str]:
    """Untyped: any function or aggregation with any arguments, odd names, matchers and durations."""
    leaf = st.one_of(selector(odd=True), number, string,
                     st.builds(lambda s, d: f"{s}[{d}]", selector(odd=True), st.one_of(duration, odd_duration)))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda e: f"({e})", inner),
            st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.one_of(arithmetic, comparison, set_op), inner),
            st.builds(lambda f, args: f"{f}({', '.join(args)})",
                      st.sampled_from([*sorted(FUNCTIONS), "holt_winters", "histogram_count", "sort_by_label", "info",
                                       "nope"]), st.lists(inner, max_size=3)),
            st.builds(lambda a, g, args: f"{a} {g} ({', '.join(args)})",
                      st.sampled_from(["sum", "topk", "quantile", "count_values", "limitk", "limit_ratio"]), grouping,
                      st.lists(inner, min_size=1, max_size=2)),
            st.builds(lambda e, r, s: f"({e})[{r}:{s}]", inner, st.one_of(duration, odd_duration),
                      st.sampled_from(["", "1m", "0s", "90"])),
        ),
        max_leaves=6,
    )


odd = odd_expressions()
valid_ish = st.one_of(typed, typed, typed, odd)


@st.composite
def broken(draw: st.DrawFn, text: st.SearchStrategy[str]) -> str:
    """An expression with one to three characters inserted, deleted or replaced."""
    out = draw(text)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(out)))
        piece = draw(st.sampled_from(list("()[]{},:\"'`=~!@-+*/^ \\\n0.5emsbyonor")))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            out = out[:at] + piece + out[at:]
        elif kind == "delete":
            out = out[:at] + out[at + 1:]
        else:
            out = out[:at] + piece + out[at + 1:]
    return out
