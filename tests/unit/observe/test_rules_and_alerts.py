"""Rule files, the alert state machine, templating, and RuleManager writing ALERTS and recorded series."""

from __future__ import annotations

import pytest

from lichen.control.alerting import FIRING, INACTIVE, PENDING, AlertResult, AlertRuleSpec, step_alerts
from lichen.errors import DataError
from lichen.observe.promql import Engine
from lichen.observe.rule_files import parse_rule_text
from lichen.observe.rules import RuleManager
from lichen.observe.series import SeriesStore
from lichen.observe.templating import TemplateError, compile_template, expand, go_float, humanize

RULES = """
groups:
  - name: svc
    interval: 10s
    rules:
      - record: job:errors:rate1m
        expr: sum by (job) (rate(errors_total[1m]))
      - alert: ErrorsHigh
        expr: job:errors:rate1m > 1
        for: 30s
        keep_firing_for: 20s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} has {{ $value | humanize }} errors/s"
"""


def test_alert_state_machine_pending_firing_resolved() -> None:
    rule = AlertRuleSpec("A", for_s=30)
    labels = (("alertname", "A"),)
    hit = [AlertResult(labels, (), 5.0)]
    active, samples = step_alerts({}, hit, rule, 0)
    assert active[labels].state == PENDING and {dict(s.labels)["alertstate"] for s in samples if "alertstate" in dict(s.labels)} == {"pending"}
    active, _ = step_alerts(active, hit, rule, 20)
    assert active[labels].state == PENDING
    active, samples = step_alerts(active, hit, rule, 30)
    assert active[labels].state == FIRING and active[labels].fired_at_s == 30
    for_state = [s for s in samples if dict(s.labels)["__name__"] == "ALERTS_FOR_STATE"]
    assert for_state[0].value == 0.0  # activeAt
    active, samples = step_alerts(active, [], rule, 40)
    assert active[labels].state == INACTIVE and active[labels].resolved_at_s == 40 and samples == []
    active, _ = step_alerts(active, [], rule, 40 + 15 * 60 + 1)
    assert active == {}


def test_pending_alert_that_clears_is_dropped_and_keep_firing_for_holds_firing() -> None:
    labels = (("alertname", "A"),)
    hit = [AlertResult(labels, (), 1.0)]
    active, _ = step_alerts({}, hit, AlertRuleSpec("A", for_s=60), 0)
    active, _ = step_alerts(active, [], AlertRuleSpec("A", for_s=60), 10)
    assert active == {}
    rule = AlertRuleSpec("A", for_s=0, keep_firing_for_s=20)
    active, _ = step_alerts({}, hit, rule, 0)
    assert active[labels].state == FIRING
    active, _ = step_alerts(active, [], rule, 10)
    assert active[labels].state == FIRING
    active, _ = step_alerts(active, [], rule, 25)
    assert active[labels].state == FIRING  # 15 s without the condition < 20 s
    active, _ = step_alerts(active, [], rule, 30)
    assert active[labels].state == INACTIVE


def test_rule_manager_records_fires_and_writes_alerts_series() -> None:
    store = SeriesStore()
    engine = Engine(store)
    manager = RuleManager(store, engine)
    manager.load_text(RULES, "svc.yml")
    t0 = 1_700_000_000.0
    for i in range(0, 13):
        t = t0 + i * 10
        errors = i * 50.0 if i <= 8 else 400.0  # 5 errors/s, then flat
        store.append({"__name__": "errors_total", "job": "api", "instance": "a"}, int(t * 1000), errors)
        manager.evaluate_due(t)
        states = {a.state for a in manager.alerts(include_resolved=False)}
        if i == 2:
            assert states == {"pending"}
        if i == 6:
            assert states == {"firing"}
            [alert] = manager.firing()
            assert alert.labels == {"alertname": "ErrorsHigh", "job": "api", "severity": "page"}
            assert alert.annotations["summary"] == "api has 5 errors/s"
    [(labels, value)] = engine.instant_samples("job:errors:rate1m", t0 + 60)
    assert labels == {"__name__": "job:errors:rate1m", "job": "api"} and value == pytest.approx(5.0)
    firing = engine.instant_samples('ALERTS{alertstate="firing"}', t0 + 60)
    assert firing and firing[0][0]["severity"] == "page"
    status = manager.rules_status()
    assert status["groups"][0]["rules"][1]["type"] == "alerting" and status["groups"][0]["interval"] == 10


def test_alerts_series_gets_a_stale_marker_when_the_alert_resolves() -> None:
    store = SeriesStore()
    manager = RuleManager(store)
    manager.load_text("groups: [{name: g, rules: [{alert: Up0, expr: 'up == 0'}]}]")
    store.append({"__name__": "up", "job": "x"}, 0, 0.0)
    manager.evaluate_due(0)
    assert Engine(store).instant_samples("ALERTS", 0)
    store.append({"__name__": "up", "job": "x"}, 60_000, 1.0)
    manager.evaluate_due(60)
    assert Engine(store).instant_samples("ALERTS", 60) == []
    assert [a.state for a in manager.alerts()] == ["inactive"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups: [{name: g, rules: [{record: 'bad name', expr: up}]}]", "invalid recording rule name"),
        ("groups: [{name: g, rules: [{alert: A, expr: 'sum('}]}]", "cannot parse"),
        ("groups: [{name: g, rules: [{alert: A, expr: up, for: 5x}]}]", "invalid duration"),
        ("groups: [{name: g, rules: [{alert: A, record: b, expr: up}]}]", "one of 'record' or 'alert'"),
        ("groups: [{name: g}, {name: g}]", "repeated"),
        ("groups: [{name: g, rules: [{alert: A, expr: up, annotations: {s: '{{ tmpl \"x\" . }}'}}]}]", "not supported"),
        ("groups: [{name: g, rules: [{alert: A, expr: up, annotations: {s: '{{ range . }}'}}]}]", "has no {{end}}"),
        ("groups: [{name: g, rules: [{alert: A, expr: 'histogram_count(up)'}]}]", "histogram_count"),
        ("rules: []", "groups"),
    ],
)
def test_invalid_rule_files_name_file_and_problem(text: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        parse_rule_text(text, "my.yml")
    assert message in str(info.value) and "my.yml" in str(info.value)


def test_rule_errors_carry_the_line_number() -> None:
    text = "groups:\n  - name: g\n    rules:\n      - record: ok\n        expr: up\n      - alert: A\n        expr: 'sum('\n"
    with pytest.raises(DataError, match=r"my.yml:7 groups\[0\].rules\[1\].expr"):
        parse_rule_text(text, "my.yml")


def test_go_template_subset() -> None:
    assert expand("{{ $labels.a }}/{{ .Labels.b }}", {"a": "x", "b": "y"}, 0) == "x/y"
    assert expand("{{ $value }}", {}, 1e6) == "1e+06"
    assert expand("{{ $value }}", {}, 0.25) == "0.25"
    assert expand("{{ printf \"%.1f\" $value }}%", {}, 99.94) == "99.9%"
    assert expand("{{ $value | humanizePercentage }}", {}, 0.125) == "12.5%"
    assert expand("{{ $labels.missing }}!", {}, 0) == "!"
    assert expand("a  {{- \"b\" -}}  c", {}, 0) == "abc"
    assert humanize(1234567) == "1.235M" and humanize(0.002) == "2m"
    assert go_float(123456.0) == "123456" and go_float(1234567.0) == "1.234567e+06" and go_float(-0.0001) == "-0.0001"
    assert expand("{{ if gt $value 10.0 }}hi{{ else if gt $value 1.0 }}mid{{ else }}lo{{ end }}", {}, 5) == "mid"
    assert expand("{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}", {"b": "2", "a": "1"}, 0) == "a=1,b=2,"
    assert expand("{{ with $labels.t }}[{{ . }}]{{ else }}none{{ end }}", {}, 0) == "none"
    assert expand("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, 0) == "2"
    assert expand("{{ gt $value 1 }}", {}, 5).startswith("<error expanding template:")  # float vs int, as Go
    with pytest.raises(TemplateError, match="has no"):
        compile_template("{{ if $value }}x")
    with pytest.raises(TemplateError, match="not supported"):
        compile_template('{{ tmpl "x" . }}')


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    foo: bar\n", "my.yml:6 groups[0].rules[0].foo"),
        ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 5x\n", "my.yml:6 groups[0].rules[0].for"),
        ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n   bad: [\n", "my.yml:6:4"),
        ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels:\n      ok: x\n      bad-label: x\n", "my.yml:8 groups[0].rules[0].labels.bad-label"),
        ("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      a: '{{ .Foo'\n", "my.yml:7 groups[0].rules[0]"),
    ],
)
def test_rule_errors_point_at_the_offending_line(text: str, where: str) -> None:
    with pytest.raises(DataError) as info:
        parse_rule_text(text, "my.yml")
    assert str(info.value).startswith(where), str(info.value)
    assert "\n" not in str(info.value)


def test_rule_labels_may_start_with_two_underscores_but_not_be_the_metric_name() -> None:
    [group] = parse_rule_text("groups: [{name: g, rules: [{alert: A, expr: up, labels: {__x__: y}}]}]", "my.yml")
    assert group.rules[0].labels == {"__x__": "y"}
    with pytest.raises(DataError, match="invalid label name '__name__'"):
        parse_rule_text("groups: [{name: g, rules: [{record: r, expr: up, labels: {__name__: y}}]}]", "my.yml")


def test_templates_can_query_at_the_evaluation_time() -> None:
    store = SeriesStore()
    for inst, value in (("a", 1.0), ("b", 0.0), ("c", 1.0)):
        for t in (0, 60_000):
            store.append({"__name__": "up", "instance": inst}, t, value)
    manager = RuleManager(store)
    manager.load_text(
        "groups: [{name: g, rules: [{alert: Q, expr: 'up == 0', annotations: {"
        "total: '{{ with query \"sum(up)\" }}{{ . | first | value }}{{ end }}', "
        "names: '{{ range sortByLabel \"instance\" (query \"up\") }}{{ label \"instance\" . }},{{ end }}', "
        "none: '{{ query \"nothing\" | first }}'}}]}]"
    )
    manager.evaluate_due(60)
    [alert] = [a for g in manager.groups for r in g.rules for a in r.active.values()]
    annotations = dict(alert.annotations)
    assert annotations["total"] == "2" and annotations["names"] == "a,b,c,"
    assert annotations["none"].startswith("<error expanding template:") and "no elements" in annotations["none"]


@pytest.mark.parametrize("duration", ["30", "''", "1.5m", "1m1h", "5M"])
def test_durations_need_prometheus_units_as_in_promtool(duration: str) -> None:
    with pytest.raises(DataError, match="invalid duration"):
        parse_rule_text(f"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: {duration}\n", "my.yml")


@pytest.mark.parametrize("duration", ["0", "0s", "5m30s", "1d", "1w", "100ms", "2d12h"])
def test_prometheus_durations_are_accepted(duration: str) -> None:
    parse_rule_text(f"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: {duration}\n", "my.yml")


def test_evaluation_times_stay_on_the_group_grid_despite_tick_jitter() -> None:
    """A tick 20 ms early must neither skip a slot nor make `for` fall short by 20 ms."""
    store = SeriesStore()
    manager = RuleManager(store)
    manager.load_text("groups: [{name: g, interval: 1s, rules: [{alert: Down, expr: 'up == 0', for: 2s}]}]")
    for t_ms in range(0, 6000, 250):
        store.append({"__name__": "up", "job": "x"}, t_ms, 0.0)
    ticks = [0.0, 0.98, 2.01, 2.99]  # a scheduler's jittery wake-ups, about one interval apart
    assert [manager.evaluate_due(t) for t in ticks] == [1, 1, 1, 1]
    [alert] = manager.alerts()
    assert alert.active_at_s == 0.0 and alert.state == "firing"  # at the slot t=2, not one interval later
    assert manager.groups[0].last_evaluation_s == 3.0
    assert manager.evaluate_due(3.5) == 0  # mid-interval: nothing due
