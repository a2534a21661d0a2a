"""PromQL engine: result shapes, range/instant consistency, staleness, errors with positions."""

from __future__ import annotations

import math

import pytest

from lichen.observe.promql import Engine, QueryError, parse_expr
from lichen.observe.series import SeriesStore

QUERIES = [
    "req_total",
    "rate(req_total[5m])",
    "sum by (job) (rate(req_total[5m]))",
    "sum without (instance) (irate(req_total[2m]))",
    "increase(req_total[3m]) / on(job, instance) group_left avg_over_time(inflight[5m])",
    "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m])))",
    "topk(1, req_total) or bottomk(1, req_total)",
    "req_total > bool 100",
    "quantile(0.5, req_total) - stddev(req_total)",
    "max_over_time(inflight[3m]) unless on(instance) inflight < 2",
    "count(req_total offset 2m)",
    "deriv(inflight[5m])",
    "absent(nothing{job=\"x\"})",
    "clamp_max(round(abs(delta(inflight[4m])), 0.5), 3)",
    "label_replace(req_total, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "vector(time()) + scalar(count(req_total))",
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    store = SeriesStore()
    for i in range(0, 40):
        t = i * 15_000
        for inst, rate in (("a:1", 2), ("b:1", 5)):
            store.append({"__name__": "req_total", "job": "api", "instance": inst}, t, float(i * rate * 15 if i != 20 else 3))
            store.append({"__name__": "inflight", "job": "api", "instance": inst}, t, float((i * 7) % 5))
        for le, frac in (("0.1", 0.5), ("0.5", 0.8), ("1", 0.95), ("+Inf", 1.0)):
            store.append({"__name__": "lat_bucket", "le": le, "job": "api"}, t, float(int(i * 100 * frac)))
    return Engine(store)


@pytest.mark.parametrize("query", QUERIES)
def test_range_query_equals_instant_queries_at_each_step(engine: Engine, query: str) -> None:
    result = engine.range(query, 300, 585, 15)
    assert result["resultType"] == "matrix"
    by_step: dict[float, dict[tuple, str]] = {}
    for series in result["result"]:
        key = tuple(sorted(series["metric"].items()))
        for t, v in series["values"]:
            by_step.setdefault(t, {})[key] = v
    for t in range(300, 586, 15):
        instant = engine.instant(query, t)
        got = {tuple(sorted(s["metric"].items())): s["value"][1] for s in instant["result"]} if instant["resultType"] == "vector" else {}
        if instant["resultType"] == "scalar":
            got = {(): instant["result"][1]}
        assert got == by_step.get(t, {}), (query, t)


def test_instant_result_shapes(engine: Engine) -> None:
    vec = engine.instant('req_total{instance="a:1"}', 285)
    assert vec == {"resultType": "vector", "result": [{"metric": {"__name__": "req_total", "instance": "a:1", "job": "api"}, "value": [285, "570"]}]}
    assert engine.instant("1 + 1", 12.5) == {"resultType": "scalar", "result": [12.5, "2"]}
    assert engine.instant('"hello"', 10) == {"resultType": "string", "result": [10, "hello"]}
    matrix = engine.instant('req_total{instance="a:1"}[30s]', 300)
    assert matrix["resultType"] == "matrix"
    assert [p[0] for p in matrix["result"][0]["values"]] == [270, 285, 300]


def test_rate_handles_counter_reset(engine: Engine) -> None:
    # samples 570 (t=285), 3 (t=300, a reset), 630 (t=315): 630 - 570 + 570
    [sample] = engine.instant_samples('increase(req_total{instance="a:1"}[30s])', 315)
    assert sample[1] == 630.0


def test_staleness_and_lookback() -> None:
    from lichen.observe.series import STALE_NAN

    store = SeriesStore()
    store.append({"__name__": "g"}, 0, 1.0)
    store.append({"__name__": "g"}, 60_000, 2.0)
    store.append({"__name__": "g"}, 120_000, STALE_NAN)
    store.append({"__name__": "h"}, 0, 7.0)
    engine = Engine(store)
    assert engine.instant_samples("g", 60) == [({"__name__": "g"}, 2.0)]
    assert engine.instant_samples("g", 120) == []
    assert engine.instant_samples("h", 300) == [({"__name__": "h"}, 7.0)]  # lookback is inclusive
    assert engine.instant_samples("h", 300.001) == []
    assert engine.instant_samples("count_over_time(g[5m])", 180) == [({}, 2.0)]  # stale markers are not samples


@pytest.mark.parametrize(
    ("query", "construct", "position"),
    [
        ("sum(histogram_sum(x))", "histogram_sum()", 5),
        ("histogram_count(x)", "histogram_count()", 1),
        ("1 + limitk(1, x)", "limitk()", 5),
        ("x{a=\"b\" or c=\"d\"}", "'or' inside label matchers", 8),
    ],
)
def test_unsupported_constructs_name_themselves_and_their_position(engine: Engine, query: str, construct: str, position: int) -> None:
    with pytest.raises(QueryError) as info:
        engine.instant(query, 100)
    assert construct in str(info.value)
    assert f"position {position}" in str(info.value)


def test_parse_errors_are_query_errors(engine: Engine) -> None:
    with pytest.raises(QueryError, match="cannot parse"):
        engine.instant("sum(", 1)


def test_many_to_one_without_group_left_is_an_error(engine: Engine) -> None:
    with pytest.raises(QueryError, match="many-to-one matching must be explicit"):
        engine.instant("req_total / on(job) sum by (job) (req_total)", 300)


def test_duplicate_labelset_after_dropping_name_is_an_error() -> None:
    store = SeriesStore()
    store.append({"__name__": "a", "x": "1"}, 0, 1.0)
    store.append({"__name__": "b", "x": "1"}, 0, 2.0)
    with pytest.raises(QueryError, match="same labelset"):
        Engine(store).instant('abs({__name__=~"a|b"})', 0)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    store = SeriesStore()
    for le, count in (("0.1", 100.0), ("0.5", 300.0), ("1", 400.0), ("+Inf", 400.0)):
        store.append({"__name__": "x_bucket", "le": le}, 0, count)
    [(_, value)] = Engine(store).instant_samples("histogram_quantile(0.5, x_bucket)", 0)
    assert value == 0.1 + (0.5 - 0.1) * (100 / 200)
    [(_, top)] = Engine(store).instant_samples("histogram_quantile(0.999, x_bucket)", 0)
    assert top == pytest.approx(0.5 + 0.5 * (399.6 - 300) / 100)
    assert math.isnan(Engine(store).instant_samples("histogram_quantile(0.5, nothing_bucket) or vector(NaN)", 0)[0][1])


def test_range_rejects_too_many_points_and_bad_steps(engine: Engine) -> None:
    with pytest.raises(QueryError, match="11,000 points"):
        engine.range("req_total", 0, 20_000, 1)
    with pytest.raises(QueryError, match="step"):
        engine.range("req_total", 0, 10, 0)


def test_vectorised_bucket_quantile_is_bit_identical_to_the_scalar_one() -> None:
    import numpy as np

    from lichen.observe.promql_functions import _bucket_quantile, _bucket_quantile_columns

    rng = np.random.default_rng(3)
    for _ in range(400):
        n = int(rng.integers(1, 8))
        bounds = np.sort(rng.choice([-1.0, 0.0, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], size=n - 1, replace=False))
        bounds = np.concatenate([bounds, [math.inf if rng.random() < 0.9 else 100.0]])
        counts = rng.integers(0, 20, size=(len(bounds), 5)).astype(float)
        if rng.random() < 0.5:
            counts = np.cumsum(counts, axis=0)
        q = rng.choice([0.0, 0.5, 0.9, 0.99, 1.0, -0.1, 1.5, math.nan], size=5)
        got = _bucket_quantile_columns(q, bounds, counts.copy())
        for j in range(5):
            want = _bucket_quantile(float(q[j]), list(zip(bounds.tolist(), counts[:, j].tolist(), strict=True)))
            assert (math.isnan(want) and math.isnan(got[j])) or want == got[j]


def test_a_subquery_without_step_uses_the_pipelines_evaluation_interval() -> None:
    from lichen.observe.collecting import MetricsPipeline

    store = SeriesStore()
    for i in range(0, 41):
        store.append({"__name__": "x"}, i * 15_000, float(i))
    pipeline = MetricsPipeline(store, evaluation_interval_s=15.0)
    assert pipeline.engine.instant_samples("count_over_time(x[5m:])", 600) == [({}, 21.0)]  # every 15 s in [300, 600]
    assert Engine(store).instant_samples("count_over_time(x[5m:])", 600) == [({}, 6.0)]  # the 1m default


def test_the_at_modifier_pins_a_selector_to_a_time_start_or_end(engine: Engine) -> None:
    pinned = engine.range("sum(req_total @ 300)", 60, 240, 60)["result"][0]["values"]
    assert [v for _, v in pinned] == [pinned[0][1]] * 4
    assert pinned[0][1] == engine.instant("sum(req_total)", 300)["result"][0]["value"][1]
    start = engine.range("sum(req_total @ start())", 60, 240, 60)["result"][0]["values"]
    end = engine.range("sum(req_total @ end())", 60, 240, 60)["result"][0]["values"]
    assert {v for _, v in start} == {engine.instant("sum(req_total)", 60)["result"][0]["value"][1]}
    assert {v for _, v in end} == {engine.instant("sum(req_total)", 240)["result"][0]["value"][1]}


@pytest.mark.parametrize("query", ["rate(x[90])", "x offset 60", "x[5m:1]"])
def test_durations_without_a_unit_are_refused_as_prometheus_2_does(query: str) -> None:
    with pytest.raises(QueryError, match="missing unit character in duration"):
        parse_expr(query)


def test_out_of_range_at_times_are_query_errors_not_crashes(engine: Engine) -> None:
    for query in ("x @ 1e20", "x @ -100"):
        with pytest.raises(QueryError):
            engine.instant(query, 100)
    assert parse_expr('x{a="[5]"} offset 5m') is not None  # brackets inside strings are not ranges


def test_an_instant_topk_lists_each_groups_choices_best_first() -> None:
    store = SeriesStore()
    for name, value, group in (("a", 3.0, "x"), ("b", 1.0, "y"), ("c", 2.0, "x"), ("d", 5.0, "y"), ("e", math.nan, "x")):
        store.append({"__name__": "x", "n": name, "g": group}, 0, value)
    engine = Engine(store)

    def names(query: str) -> list[str]:
        return [r["metric"]["n"] for r in engine.instant(query, 1)["result"]]

    assert names("topk(3, x)") == ["d", "a", "c"]
    assert names("bottomk(2, x)") == ["b", "c"]
    assert names("topk by (g) (2, x)") == ["a", "c", "d", "b"]


def test_holt_winters_is_renamed_only_outside_strings() -> None:
    node = parse_expr('holt_winters(x{a="holt_winters("}[5m], 0.5, 0.5)')
    assert 'a="holt_winters("' in str(node) and str(node).startswith("double_exponential_smoothing(")


def test_duplicate_match_groups_are_no_error_when_the_other_side_is_empty() -> None:
    """Prometheus short-circuits a binary operation at a step where either side has no samples."""
    store = SeriesStore()
    store.append({"__name__": "lone"}, 0, 5.0)  # seen at steps 0 s and 300 s (5 min lookback), not at 600 s
    store.append({"__name__": "dup", "a": "1"}, 600_000, 1.0)  # two series in match group {} at 600 s only
    store.append({"__name__": "dup", "a": "2"}, 600_000, 2.0)
    store.append({"__name__": "late"}, 600_000, 7.0)
    engine = Engine(store)
    assert engine.range("lone + on() dup", 0, 600, 300)["result"] == []
    with pytest.raises(QueryError, match="duplicate series for the match group"):
        engine.range("late + on() dup", 0, 600, 300)
