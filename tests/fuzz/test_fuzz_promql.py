"""Fuzzing the PromQL path (alert rules, the query API, the dashboard): any query gives a result or a QueryError.

Expressions come from a grammar of PromQL (selectors with every matcher,
ranges, offsets, ``@``, subqueries, every function the engine has and a few it
has not, aggregations with ``by``/``without`` and parameters, operators with
``bool``/``on``/``ignoring``/``group_left``), then are sometimes broken by a
character; arbitrary strings too. Each is parsed, evaluated at an instant and
over a range against a small store, and asked for as rule samples. The only
failure allowed is :class:`QueryError`, whose message names the problem; the
query API answers 200, 400 or 422, never 500. Failing inputs the fuzzer
found stay as ``@example`` s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fuzzing import fuzz_settings
from hypothesis import example, given, note
from hypothesis import strategies as st
from promql_strategies import broken, odd, selector, typed, valid_ish

from lichen.observe.http_api import build_query_router
from lichen.observe.promql import Engine, QueryError, parse_expr
from lichen.observe.series import SeriesStore
from lichen.testing.clocks import FakeClock

T0_S = 1_700_000_000.0

# ------------------------------------------------------------------ the checks


@pytest.fixture(scope="module")
def engine() -> Engine:
    store = SeriesStore()
    t0_ms = int(T0_S * 1000)
    for i in range(40):
        t = t0_ms - (40 - i) * 15_000
        for instance, rate in (("a:1", 2), ("b:1", 5)):
            store.append({"__name__": "req_total", "job": "api", "instance": instance}, t, float(i * rate))
            store.append({"__name__": "inflight", "job": "api", "instance": instance}, t, float((i * 7) % 5))
            store.append({"__name__": "up", "job": "api", "instance": instance}, t, float(i % 3 != 0))
        for le, share in (("0.1", 0.5), ("0.5", 0.8), ("+Inf", 1.0)):
            store.append({"__name__": "lat_bucket", "job": "api", "le": le}, t, i * 10 * share)
    store.append({"__name__": "up", "job": "nan"}, t0_ms - 1000, math.nan)
    return Engine(store)


def evaluate_every_way(engine: Engine, text: str) -> None:
    """Parse, then instant, range and rule-sample evaluation: each returns, or raises a QueryError with a message."""
    note(f"query: {text[:2000]!r}")
    try:
        parse_expr(text)
    except QueryError as exc:
        assert exc.message.strip()
        return
    for run in (
        lambda: engine.instant(text, T0_S),
        lambda: engine.range(text, T0_S - 600, T0_S, 15),
        lambda: engine.instant_samples(text, T0_S),
    ):
        try:
            result = run()
        except QueryError as exc:
            assert exc.message.strip()
        else:
            if isinstance(result, dict):  # the API's data object: strict JSON (Prometheus writes NaN as a string)
                json.dumps(result, allow_nan=False)


# Found by these fuzzers; each stays as a regression test (the fix is named beside it).
@fuzz_settings(400)
@given(text=st.one_of(typed, typed, odd, broken(typed)))
@example(text="(" * 1000 + "1" + ")" * 1000)  # RecursionError in the engine's own checks (promql.parse_promql)
@example(text="clamp_min(up @ start() + tan(up @ start()), 0)")  # both sides empty over a range: numpy ValueError
def test_generated_queries_give_a_result_or_a_query_error(engine: Engine, text: str) -> None:
    evaluate_every_way(engine, text)


@fuzz_settings(150)
@given(text=st.text(max_size=60))
def test_arbitrary_strings_give_a_result_or_a_query_error(engine: Engine, text: str) -> None:
    evaluate_every_way(engine, text)


QUERY_PARAMS = st.fixed_dictionaries(
    {"query": st.one_of(valid_ish, st.text(max_size=20))},
    optional={
        "time": st.sampled_from(["1700000000", "1e20", "-1e20", "inf", "NaN", "2024-01-01T00:00:00Z", "x", "",
                                 "1700000000.123456789", "9" * 400]),
        "start": st.sampled_from(["1699999000", "0", "-1", "inf", "nan", "1e300", "2024-01-01T00:00:00Z", "x"]),
        "end": st.sampled_from(["1700000000", "1699999000", "inf", "-inf", "nan", "1e300", "x"]),
        "step": st.sampled_from(["15", "0", "-1", "1e-9", "inf", "nan", "15s", "1h", "x", "1e300"]),
    },
)


@pytest.fixture(scope="module")
def query_api(engine: Engine) -> TestClient:
    app = FastAPI()
    app.include_router(build_query_router(engine.store, engine, clock=FakeClock(start=0.0, wall_offset=T0_S)))
    return TestClient(app, base_url="http://query-api", raise_server_exceptions=False)


@fuzz_settings(150)
@given(path=st.sampled_from(["/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels",
                             "/api/v1/label/job/values", "/federate"]),
       params=QUERY_PARAMS, match=st.lists(st.one_of(selector(), valid_ish), max_size=2), post=st.booleans())
# each of these answered 500 (http_api.parse_time / parse_step, Engine.range) or crashed the process (parse_promql)
@example(path="/api/v1/series", params={"query": "", "start": "inf"}, match=["up"], post=False)
@example(path="/api/v1/query", params={"query": "up", "time": "NaN"}, match=[], post=False)
@example(path="/api/v1/query", params={"query": "up", "time": "1e300"}, match=[], post=True)
@example(path="/api/v1/query_range", params={"query": "up", "start": "0", "end": "1", "step": "nan"}, match=[], post=False)
@example(path="/api/v1/query_range", params={"query": "time()", "start": "1699999000", "end": "1699999000",
                                             "step": "1e-9"}, match=[], post=False)
def test_the_query_api_answers_without_a_server_error(query_api: TestClient, path: str, params: dict[str, str],
                                                      match: list[str], post: bool) -> None:
    items = [*params.items(), *(("match[]", m) for m in match)]
    note(f"{'POST' if post else 'GET'} {path} {items!r}")
    if post and path not in ("/api/v1/label/job/values", "/federate"):  # a form body, as Grafana sends it
        response = query_api.post(path, content=str(httpx.QueryParams(items)),
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    else:
        response = query_api.get(path, params=items)
    assert response.status_code in (200, 400, 422), (response.status_code, response.text)
    if path != "/federate":
        body = response.json()
        assert body["status"] == ("success" if response.status_code == 200 else "error"), body


DEEP = {"chain": "1" + " + 1" * 5000, "parentheses": "(" * 20000 + "1" + ")" * 20000,
        "selector": "(" * 20000 + "up" + ")" * 20000}
CRASH_CHECK = """
import sys
from lichen.observe.http_api import _BadData, selector_matchers
from lichen.observe.promql import QueryError, parse_expr
text = sys.stdin.read()
try:
    parse_expr(text)
except QueryError as exc:
    print("refused:", exc.message[:80])
try:
    selector_matchers(text)
except _BadData as exc:
    print("refused match[]:", str(exc)[-80:])
"""


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_queries_are_refused_without_crashing_the_process(name: str) -> None:
    """promql-parser overflowed its stack on these (a segfault: the controller died with its query API);
    promql.parse_promql now refuses them first. Run in a child so a regression fails this test, not the suite."""
    result = subprocess.run([sys.executable, "-c", CRASH_CHECK], input=DEEP[name], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.count("refused") == 2 and "nests about" in result.stdout, result.stdout
