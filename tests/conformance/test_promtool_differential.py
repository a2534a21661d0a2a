"""Differential check: ~60 PromQL expressions at 6 times, values taken from promtool itself.

Every expression gets a deliberately wrong expectation, so promtool's report prints the samples
Prometheus computed ("got: ..."); those must equal what Lichen's engine computes from the same
input series. Complements the hand-written conformance files with many more value checks.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from lichen.observe.promql import Engine, QueryError
from lichen.observe.promtool_tests import _parse_metric, expand_series_values
from lichen.observe.series import SeriesStore, labels_key

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")

SERIES = [
    ('req_total{job="api",inst="a",code="200"}', "0+13x30"),
    ('req_total{job="api",inst="b",code="200"}', "5+7x10 0+9x19"),
    ('req_total{job="api",inst="a",code="500"}', "0+1x12 _x5 20+2x12"),
    ('req_total{job="web",inst="c",code="200"}', "100+50x30"),
    ('lat_bucket{job="api",le="0.1"}', "0+3x30"),
    ('lat_bucket{job="api",le="0.3"}', "0+7x30"),
    ('lat_bucket{job="api",le="1.2"}', "0+9x30"),
    ('lat_bucket{job="api",le="+Inf"}', "0+10x30"),
    ('lat_bucket{job="web",le="0.1"}', "0+1x30"),
    ('lat_bucket{job="web",le="0.3"}', "0+1x30"),
    ('lat_bucket{job="web",le="1.2"}', "0+5x30"),
    ('lat_bucket{job="web",le="+Inf"}', "0+6x30"),
    ('temp{room="x"}', "20 21.5 19 23 22.25 stale 18 17.5 30 -2 4 4 4 _ _ 8 9 10 11.1 12.7 13 11 9 7 5 3 1 0 -1 -3 -5"),
    ('temp{room="y"}', "1.1+0.3x30"),
    ('info{job="api",team="a"}', "1x30"),
    ('info{job="web",team="b"}', "1x30"),
]
EXPRESSIONS = [
    "rate(req_total[5m])", "rate(req_total[90s])", "irate(req_total[3m])", "increase(req_total[7m])",
    "delta(temp[4m])", "idelta(temp[5m])", "deriv(temp[6m])", "avg_over_time(temp[7m])", "min_over_time(temp[3m])",
    "max_over_time(temp[10m])", "sum_over_time(temp[5m])", "count_over_time(temp[10m])", "last_over_time(temp[2m])",
    "quantile_over_time(0.3, temp[8m])", "stddev_over_time(temp[6m])", "stdvar_over_time(temp[5m])",
    "present_over_time(temp[1m])", "histogram_quantile(0.9, rate(lat_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(lat_bucket[5m])))", "histogram_quantile(0.99, lat_bucket)",
    "histogram_quantile(0.05, lat_bucket)", "sum by (job) (rate(req_total[5m]))", "sum without (code) (req_total)",
    "max by (code) (req_total)", "min(temp)", "count by (job) (req_total)", "topk(2, req_total)", "bottomk(1, temp)",
    "quantile(0.7, req_total)", "avg by (job) (req_total)", "req_total / on(job) group_left(team) info",
    "sum by (job) (rate(req_total{code=\"500\"}[5m])) / sum by (job) (rate(req_total[5m]))", "req_total > 100",
    "req_total >= bool 100", "temp % 3", "temp ^ 2", "-temp", "abs(temp - 10)", "round(temp, 0.3)",
    "clamp_min(temp, 5)", "clamp_max(temp, 15)", "temp and on() vector(1)", "req_total unless on(inst) temp",
    "req_total{code=\"500\"} or on(job) req_total{code=\"200\"}", "label_replace(req_total, \"x\", \"$1$1\", \"inst\", \"(.)\")",
    "absent(temp{room=\"z\"})", "absent_over_time(temp{room=\"x\"}[1m])", "scalar(temp{room=\"y\"}) * 2", "time() - 60",
    "vector(1) + on() group_left temp", "req_total offset 3m", "rate(req_total[5m] offset 2m)", "count(temp)",
    "sum(rate(req_total[10m])) by (code)", "increase(req_total[1m])", "rate(req_total[15m])",
    "stddev by (job) (req_total)", "stdvar(temp)", "group by (code) (req_total)", "quantile by (job) (0.25, req_total)",
    "topk by (job) (1, req_total)", "bottomk(2, req_total) > 0", "req_total > on(job, inst, code) req_total offset 1m",
    "req_total - ignoring(code) group_left req_total{code=\"500\"}", "info * on(job) group_right(team) req_total",
    "clamp(temp, 0, 12)", "ceil(temp)", "floor(temp / 3)", "sqrt(abs(temp))", "ln(temp{room=\"y\"})", "exp(temp / 10)",
    "temp atan2 2", "-temp % 4", "temp / 0", "(temp - temp) / (temp - temp)", "req_total and on(job) info",
    "absent(nonexistent_metric)", "delta(req_total[5m])", "irate(req_total[10m])", "deriv(req_total[10m])",
    "rate(req_total{code=\"500\"}[3m])", "sum_over_time(temp{room=\"y\"}[30m])", "avg_over_time(temp{room=\"y\"}[30m])",
    "count_over_time(temp[30s])", "temp != bool 4", "max(temp) - min(temp)", "count(req_total > 50) by (job)",
    # second batch
    'sum(req_total) by (job) * on(job) group_left() info', 'topk(1, req_total) by (code)',
    'histogram_quantile(0.5, sum(rate(lat_bucket[5m])) by (le, job))', 'quantile(0.5, temp) by (room)',
    'max_over_time(temp[10m] offset 5m)', 'absent_over_time(nonexistent[5m])', 'label_replace(info, "team", "", "", "")',
    'req_total == bool on(job,inst,code) req_total', 'vector(time()) > bool 600', 'scalar(req_total)', 'count(absent(x))',
    '1 - rate(req_total[5m])', '2 ^ temp', 'temp > 10 < 20', '(temp > 10) + 1', 'sum(temp) without (room)', 'avg(rate(req_total[5m]))',
    'irate(temp[1m])', 'stddev_over_time(req_total[10m])', 'quantile_over_time(0.99, req_total[10m])', 'quantile_over_time(1.5, temp[5m])',
    'quantile(-1, temp)', 'increase(req_total[5m] offset 10m)', 'last_over_time(temp[10m] offset 1m)', 'count_over_time(req_total[1h])',
    'rate(req_total[1h])', 'histogram_quantile(0.5, lat_bucket offset 2m)', 'min_over_time(temp[30m])', 'max(temp) by (room) / ignoring(room) group_left sum(temp)',
    'sum by (job, le) (lat_bucket) / ignoring(le) group_left sum by (job) (lat_bucket{le="+Inf"})', 'deriv(temp{room="y"}[30m])',
    'delta(temp[30s])', 'idelta(req_total[1m])', 'round(temp / 7, 0.25)', 'clamp_max(req_total, 100) unless req_total < 50',
    'bottomk(1, req_total) by (job) or topk(1, req_total) by (job)', 'count by (le) (lat_bucket > 10)', 'sum(rate(req_total{code!~"2.."}[5m]))',
    'req_total{inst=~"a|b", code!="500"}', '{__name__=~"temp|info", room!="x"}', 'time()', 'vector(5) * 2 + 1',
]
TIMES = ["3m", "6m", "10m", "14m", "17m", "25m"]
# Cases from the review of issue 5: NaN ordering, single samples, histogram edge cases, counter
# resets, subqueries, @, and the functions added then. (topk/bottomk ties are left out: promtool
# picks among equal values by series insertion order, which varies from run to run.)
REVIEW_SERIES = [
    ('req_total{job="api",inst="a",code="200"}', "0+13x30"),
    ('req_total{job="api",inst="b",code="200"}', "5+7x10 0+9x19"),
    ('req_total{job="web",inst="c",code="500"}', "100+50x30"),
    ('h_bucket{job="inf",le="+Inf"}', "0+10x30"),
    ('h_bucket{job="uns",le="1"}', "0+3x30"),
    ('h_bucket{job="uns",le="0.5"}', "0+1x30"),
    ('h_bucket{job="uns",le="+Inf"}', "0+5x30"),
    ('h_bucket{job="nm",le="0.1"}', "0+5x30"),
    ('h_bucket{job="nm",le="0.5"}', "0+3x30"),
    ('h_bucket{job="nm",le="+Inf"}', "0+6x30"),
    ('h_bucket{job="noinf",le="0.1"}', "0+5x30"),
    ('h_bucket{job="nan",le="0.1"}', " ".join(["NaN"] * 31)),
    ('h_bucket{job="nan",le="+Inf"}', "1x30"),
    ('h_bucket{job="zero",le="0.1"}', "0x30"),
    ('h_bucket{job="zero",le="+Inf"}', "0x30"),
    ('tie{a="1"}', "5x30"), ('tie{a="2"}', "5x30"), ('tie{a="3"}', "5x30"), ('tie{a="4"}', " ".join(["NaN"] * 31)),
    ('one{x="y"}', "_x20 7 _x9"),
    ('info{job="api",team="a",extra="e1"}', "1x30"),
    ('info{job="web",team="b",extra="e2"}', "1x30"),
    ('cnt{a="1",b="x"}', "1 2 3 0 1 2 100 3 0 0 5x20"),
    ('g{a="1",b="x"}', "-3 Inf -Inf 2.5 1e10 0.000001 7x25"),
]  # fmt: skip
REVIEW_EXPRESSIONS = [
    'count by (job) (sum without (inst) (req_total))', 'count without (inst, code) (req_total)', 'avg without () (req_total)',
    '2 - req_total', '2 > req_total', 'req_total < 2', '2 > bool req_total', '1 < bool 2', '(1 < bool 2) + 1',
    'req_total * on() group_left vector(2)', 'sum(req_total) + on() vector(1)', 'req_total * on(job) group_left(team, extra) info',
    'req_total * on(job) info', 'tie + tie', 'req_total + ignoring(code) req_total',
    'label_replace(req_total, "dst", "$1-$2", "inst", "(.)(.*)")', 'label_replace(req_total, "dst", "x$1", "inst", "z(.*)")',
    'label_replace(req_total, "inst", "", "inst", ".*")', 'label_replace(req_total, "new", "$name", "job", "(?P<name>a)pi")',
    'label_replace(tie, "a", "same", "a", ".*")', 'label_replace(req_total, "x", "$1", "job", "(.*")',
    'histogram_quantile(0.5, h_bucket)', 'histogram_quantile(0.9, rate(h_bucket[5m]))', 'histogram_quantile(0, h_bucket)',
    'histogram_quantile(1, h_bucket)', 'histogram_quantile(1.5, h_bucket)', 'histogram_quantile(NaN, h_bucket)',
    'rate(cnt[5m])', 'increase(cnt[10m])', 'irate(cnt[5m])', 'irate(one[5m])', 'rate(one[5m])', 'deriv(one[5m])',
    'resets(cnt[10m])', 'changes(cnt[10m])', 'changes(g[5m])', 'predict_linear(cnt[5m] offset 2m, 120)',
    'holt_winters(cnt[10m], 0.5, 0.5)', 'holt_winters(cnt[10m], 1, 0.5)',
    'absent(req_total{job=~"x.*"})', 'absent(nonexistent{job="a", job="b"})', 'absent_over_time(nonexistent{a="b",c=~"d"}[5m])',
    'quantile(0, tie)', 'quantile(0.5, tie)', 'quantile(1.2, req_total)', 'quantile(-0.1, req_total)', 'stddev(tie)', 'stdvar(g)',
    'rate(req_total[5m] offset 5m)', 'req_total offset -1m', 'g / 0', 'clamp(g, 2, 1)', 'round(g, 2)', 'sgn(g)', 'cos(g)', 'deg(g)',
    'pi()', 'timestamp(one)', 'timestamp(one offset 2m)', 'timestamp(req_total > 10)', 'count_values("v", g)',
    'count_values("v", req_total) by (job)', 'label_join(req_total, "j", "-", "job", "inst")', 'sort_desc(req_total)',
    'hour(vector(1700000000))', 'day_of_month(vector(1709251200))', 'days_in_month(vector(1707000000))', 'day_of_week(vector(1735603200))',
    'count_over_time(req_total[5m:1m])', 'max_over_time(rate(req_total[5m])[10m:])', 'rate(sum(req_total)[5m:30s])',
    'avg_over_time(sum by (job) (req_total)[7m:90s] offset 1m)', 'min_over_time(one[10m:1m])',
    'req_total @ 300', 'rate(req_total[5m] @ 600)', 'req_total @ 300 offset 1m', 'max_over_time(req_total[5m:1m] @ 600)',
    'tie unless tie', 'vector(1) or tie', 'sum by (le) (h_bucket)', 'quantile_over_time(2, g[5m])',
    'avg(g or label_replace(vector(1), "a", "z", "", ""))', 'avg(g or label_replace(-g, "a", "z", "", ""))',
    'avg(g or label_replace(g, "a", "z", "", ""))', 'avg(g or label_replace(vector(NaN), "a", "z", "", ""))',
]  # fmt: skip
REVIEW_TIMES = ["1m", "3m", "6m", "10m", "21m", "25m"]
GOT = re.compile(r'expr: "(.*?)", time: (\S+),\n\s+exp: .*\n\s+got: (.*)')
ERR = re.compile(r'expr: "(.*?)", time: (\S+), err: (.*)')


def _promtool_values(tmp_path: Path, series: list = SERIES, expressions: list = EXPRESSIONS, times: list = TIMES) -> dict[tuple[str, str], list]:
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": "30m", "alertname": "LoadAllSamples"}],
            "promql_expr_test": [
                {"expr": e, "eval_time": t, "exp_samples": [{"labels": '{never="matches"}', "value": -12345}]} for e in expressions
            ],
        }
        for t in times
    ]
    path = tmp_path / "differential.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": tests}, sort_keys=False))
    proc = subprocess.run(["promtool", "test", "rules", path.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out: dict[tuple[str, str], list] = {}
    for m in GOT.finditer(proc.stdout + proc.stderr):
        expr = m.group(1).encode().decode("unicode_escape")
        samples = []
        if m.group(3).strip() != "nil":
            for sm in re.finditer(r"(\{[^}]*\}) (\S+?)(?:,|$)", m.group(3).strip()):
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sm.group(1)))
                text = sm.group(2)
                value = float(text.replace("+", "")) if text in ("NaN", "+Inf", "-Inf") else float(text.replace("E", "e"))
                samples.append((tuple(sorted(labels.items())), value))
        out[(expr, m.group(2))] = sorted(samples)
    for m in ERR.finditer(proc.stdout + proc.stderr):
        out[(m.group(1).encode().decode("unicode_escape"), m.group(2))] = m.group(3)  # an error message
    return out


def test_lichen_matches_promtool_values(tmp_path: Path) -> None:
    _assert_same_values(tmp_path, SERIES, EXPRESSIONS, TIMES)


def test_lichen_matches_promtool_values_on_review_cases(tmp_path: Path) -> None:
    _assert_same_values(tmp_path, REVIEW_SERIES, REVIEW_EXPRESSIONS, REVIEW_TIMES)


def _assert_same_values(tmp_path: Path, all_series: list, expressions: list, times: list) -> None:
    expected = _promtool_values(tmp_path, all_series, expressions, times)
    assert len(expected) == len(expressions) * len(times), "could not read promtool's report"
    store = SeriesStore(retention_s=10 * 365 * 86400.0)
    for series, values in all_series:
        key = labels_key(_parse_metric(series, ""))
        for i, value in enumerate(expand_series_values(values)):
            if value is not None:
                store.append(key, i * 60_000, value)
    engine = Engine(store)
    differences = []
    for (expr, at), theirs in expected.items():
        t_s = promql_parser.parse_duration(at).total_seconds()
        if isinstance(theirs, str):
            with pytest.raises(QueryError):
                engine.instant_samples(expr, t_s)
            continue
        mine = sorted((labels_key(labels), value) for labels, value in engine.instant_samples(expr, t_s))
        same = len(mine) == len(theirs) and all(
            a[0] == b[0] and (a[1] == b[1] or (math.isnan(a[1]) and math.isnan(b[1])) or math.isclose(a[1], b[1], rel_tol=1e-12))
            for a, b in zip(mine, theirs, strict=True)
        )
        if not same:
            differences.append(f"{expr} @ {at}: prometheus {theirs[:3]} lichen {mine[:3]}")
    assert not differences, "\n".join(differences)
