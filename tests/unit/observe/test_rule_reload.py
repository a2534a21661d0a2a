"""Rule files: every problem is reported (not just the first), and a reload keeps alert state as Prometheus does."""

from __future__ import annotations

import pytest

from lichen.errors import DataError
from lichen.observe.promql import Engine
from lichen.observe.rule_files import check_rule_text, parse_rule_text
from lichen.observe.rules import RuleManager, plan_reload
from lichen.observe.series import SeriesStore

BROKEN = """\
groups:
  - name: a
    interval: 5x
    rules:
      - record: ok:sum
        expr: sum(up)
      - alert: Bad
        expr: 'sum('
        for: 5q
  - name: b
    rules:
      - alert: AlsoBad
        expr: up
        foo: 1
"""


def test_every_problem_is_reported_in_file_order_with_its_line() -> None:
    groups, problems = check_rule_text(BROKEN, "my.yml")
    assert [str(p).split(":")[0:2] for p in problems] == [["my.yml", "3 groups[0].interval"],
                                                          ["my.yml", "8 groups[0].rules[1].expr"],
                                                          ["my.yml", "9 groups[0].rules[1].for"],
                                                          ["my.yml", "14 groups[1].rules[0].foo"]]
    assert "invalid duration '5x'" in str(problems[0]) and "unknown field(s) ['foo']" in str(problems[3])
    assert [(p.line, p.column) for p in problems] == [(3, 5), (8, 9), (9, 9), (14, 9)]
    assert groups == []  # a group with a problem is never half-loaded
    with pytest.raises(DataError) as info:  # the one-error API still raises the first, on one line
        parse_rule_text(BROKEN, "my.yml")
    assert str(info.value) == str(problems[0])


def test_a_valid_file_has_no_problems() -> None:
    groups, problems = check_rule_text("groups: [{name: g, rules: [{record: r, expr: up}]}]", "my.yml")
    assert problems == [] and [g.name for g in groups] == ["g"]


V1 = """\
groups:
  - name: keep
    rules:
      - alert: Slow
        expr: vector(1)
        for: 10m
  - name: edit
    rules:
      - alert: Edited
        expr: vector(1)
        for: 10m
      - alert: Renamed
        expr: vector(1)
        for: 10m
  - name: gone
    rules:
      - record: gone:one
        expr: vector(1)
"""
V2 = """\
groups:
  - name: keep
    rules:
      - alert: Slow
        expr: vector(1)
        for: 10m
  - name: edit
    rules:
      - alert: Edited
        expr: vector(2)
        for: 5m
      - alert: NewName
        expr: vector(1)
        for: 10m
  - name: new
    rules:
      - record: new:one
        expr: vector(1)
"""


def _manager() -> tuple[RuleManager, Engine]:
    store = SeriesStore()
    engine = Engine(store)
    manager = RuleManager(store, engine, default_interval_s=60)
    manager.add_groups(parse_rule_text(V1, "rules.yml"))
    return manager, engine


def _alert(manager: RuleManager, name: str):  # noqa: ANN202
    [alert] = [a for a in manager.alerts() if a.rule == name]
    return alert


def test_a_reload_keeps_unchanged_groups_and_the_alerts_of_same_named_rules() -> None:
    manager, engine = _manager()
    manager.evaluate_due(0)
    manager.evaluate_due(60)
    keep = manager.groups[0]
    assert _alert(manager, "Edited").state == "pending" and engine.instant_samples("gone:one", 60)

    result = manager.replace_groups(parse_rule_text(V2, "rules.yml"), 90)

    assert result.unchanged == (("rules.yml", "keep"),) and result.changed == (("rules.yml", "edit"),)
    assert result.added == (("rules.yml", "new"),) and result.removed == (("rules.yml", "gone"),)
    assert manager.groups[0] is keep  # the very same object: state, grid and `for` timers untouched
    assert [g.name for g in manager.groups] == ["keep", "edit", "new"]
    # the changed rule kept its pending alert, so `for` counts from t=0, now against the new 5m
    assert _alert(manager, "Edited").active_at_s == 0
    # a removed group's series end at the reload (a stale marker), as a deleted rule's do in Prometheus
    assert engine.instant_samples("gone:one", 91) == []
    manager.evaluate_due(300)
    assert _alert(manager, "Edited").state == "firing"  # 5 min after t=0, not after the reload
    assert _alert(manager, "NewName").active_at_s == 300  # a renamed rule starts over
    assert _alert(manager, "Slow").state == "pending" and _alert(manager, "Slow").active_at_s == 0
    assert engine.instant_samples("new:one", 300)


def test_the_reload_plan_is_decided_by_file_and_group_name() -> None:
    old = parse_rule_text(V1, "a.yml")
    same_name_other_file = parse_rule_text(V1, "b.yml")
    kinds = [kind for _, _, kind in plan_reload(old, old + same_name_other_file)]
    assert kinds == ["unchanged"] * 3 + ["added"] * 3
    relabelled = parse_rule_text(V1.replace("for: 10m", "for: 10m\n        labels: {team: x}", 1), "a.yml")
    assert [kind for _, _, kind in plan_reload(old, relabelled)] == ["changed", "unchanged", "unchanged"]
