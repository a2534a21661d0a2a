"""Fuzzing the Prometheus rule-file loader (``lichen rules check``, ``lichen validate``, rule reloads under ``lichen up``).

Any YAML document gives either rule groups or problems located in the file
(``RuleFileError``: the file, a line, a field, a message); ``parse_rule_text``
raises nothing else, and ``rule_file_issues`` gives spec issues at line >= 1.
Groups that load are then evaluated twice by a real :class:`RuleManager`
against a small store: a rule's expression or template may fail (it is kept in
``last_error``, as Prometheus shows it) but evaluation, ``rules_status()`` and
``alerts()`` never raise. Inputs: rule-file-shaped data with real keys and
values right or wrong (expressions from the PromQL grammar, Go templates), one to
three breakages of the conformance suite's rule files, and YAML-ish text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import fuzz_settings
from hypothesis import example, given, note
from hypothesis import strategies as st
from promql_strategies import typed
from spec_strategies import dump, junk, mutated, yaml_text

from lichen.observe.promql import Engine
from lichen.observe.rule_files import (
    RuleFileError,
    check_rule_text,
    parse_rule_text,
    rule_file_issues,
)
from lichen.observe.rules import RuleManager
from lichen.observe.series import SeriesStore

REPO = Path(__file__).resolve().parents[2]
T0_S = 1_700_000_000.0
RULE_FILES = sorted((REPO / "tests" / "conformance" / "rules").glob("*.yml"))

rule_duration = st.one_of(st.sampled_from(["1m", "0s", "5m", "30s", "1h30m", "0", "", "5", "-1m", "1x", "10000y"]), junk)
template = st.sampled_from([
    "{{ $value }}", "{{ $labels.job }}", "{{ humanize $value }}", "{{ humanizePercentage $value }}",
    "{{ humanizeDuration $value }}", "{{ printf \"%.2f\" $value }}", "{{ if gt $value 1.0 }}high{{ end }}",
    "{{ range query \"up\" }}{{ .Labels.job }}={{ .Value }} {{ end }}", "{{ with query \"nothing\" }}x{{ end }}",
    "{{ $externalLabels.site }}", "{{ $externalURL }}", "{{ .Labels }}", "{{ title \"a b\" }}", "{{ toUpper \"a\" }}",
    "{{ reReplaceAll \"(.*)\" \"$1\" $labels.instance }}", "{{ query \"up >\" }}", "{{ humanize \"x\" }}",
    "{{ printf \"%d\" $value }}", "{{ index $labels \"job\" }}", "{{ $value | humanize }}", "{{ define \"x\" }}{{ end }}",
    "{{", "}}", "{{ end }}", "{{ nope }}", "{{ $nope }}", "{{ range }}", "{{ if }}{{ end }}", "{{/* c */}}", "plain",
    "{{ template \"x\" }}", "{{ len $labels }}", "{{ 1 }}", "{{ \"s\" }}", "{{ humanize1024 1e30 }}", "{{ $value.x }}",
])
label_map = st.dictionaries(st.one_of(st.sampled_from(["severity", "job", "__name__", "0bad", "a-b", "summary"]),
                                      st.text(max_size=5)),
                            st.one_of(template, st.text(max_size=8), junk), max_size=3)


good_duration = st.sampled_from(["1m", "0s", "5m", "30s", "1h30m", "0", "15s"])
good_labels = st.dictionaries(st.sampled_from(["severity", "job", "team", "summary", "description"]),
                              st.one_of(template, st.sampled_from(["page", "ticket", "", "a b"])), max_size=3)


@st.composite
def good_rule(draw: st.DrawFn) -> dict[str, Any]:
    """A rule Prometheus would load; its expression and templates may still fail when evaluated."""
    if draw(st.booleans()):
        out: dict[str, Any] = {"alert": draw(st.sampled_from(["Up", "HighLoad", "ALERTS", "X"])), "expr": draw(typed)}
        for key, value in (("for", good_duration), ("keep_firing_for", good_duration), ("labels", good_labels),
                           ("annotations", good_labels)):
            if draw(st.booleans()):
                out[key] = draw(value)
        return out
    out = {"record": draw(st.sampled_from(["job:up:sum", "up", "x"])), "expr": draw(typed)}
    if draw(st.booleans()):
        out["labels"] = draw(st.dictionaries(st.sampled_from(["team", "job"]), st.sampled_from(["core", "a"]), max_size=2))
    return out


@st.composite
def odd_rule(draw: st.DrawFn) -> dict[str, Any]:
    """A rule with any of its fields wrong: both or neither kind, bad names, junk values, unknown keys."""
    out: dict[str, Any] = {}
    kind = draw(st.sampled_from(["alert", "record", "both", "neither"]))
    name = draw(st.one_of(st.sampled_from(["Up", "job:up:sum", "0bad", "a b", "ALERTS", ""]), junk))
    if kind in ("alert", "both"):
        out["alert"] = name
    if kind in ("record", "both"):
        out["record"] = name
    out["expr"] = draw(st.one_of(typed, junk))
    for key, value in (("for", rule_duration), ("keep_firing_for", rule_duration), ("labels", label_map),
                       ("annotations", label_map), ("unknown", junk)):
        if draw(st.integers(0, 3)) == 0:
            out[key] = draw(value)
    return out


rule = st.one_of(good_rule(), good_rule(), good_rule(), good_rule(), odd_rule(), junk)


@st.composite
def group(draw: st.DrawFn, index: int, clean: bool) -> Any:
    if not clean and draw(st.booleans()):  # a group with something wrong
        return draw(st.fixed_dictionaries(
            {"name": st.one_of(st.sampled_from(["g0", "", "g0"]), junk)},
            optional={"interval": rule_duration, "limit": st.one_of(st.integers(-2, 3), junk),
                      "rules": st.one_of(st.lists(rule, max_size=3), junk), "query_offset": rule_duration, "nope": junk},
        ))
    out: dict[str, Any] = {"name": f"g{index}", "rules": draw(st.lists(good_rule() if clean else rule, min_size=int(clean), max_size=4))}
    if draw(st.booleans()):
        out["interval"] = draw(good_duration.filter(lambda d: d not in ("0", "0s")))
    if draw(st.integers(0, 3)) == 3:
        out["limit"] = draw(st.integers(0, 3))
    return out


@st.composite
def rule_file_data(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 7)) == 7:
        return draw(junk)
    clean = draw(st.integers(0, 2)) < 2  # two files in three are well formed (their rules may still fail to run)
    out: dict[str, Any] = {"groups": [draw(group(i, clean)) for i in range(draw(st.integers(int(clean), 3)))]}
    if not clean and draw(st.booleans()):
        out["extra"] = draw(junk)
    return out


@pytest.fixture(scope="module")
def store() -> SeriesStore:
    store = SeriesStore()
    for i in range(20):
        t = int(T0_S * 1000) - (20 - i) * 15_000
        for instance in ("a:1", "b:1"):
            store.append({"__name__": "up", "job": "api", "instance": instance}, t, float(i % 2))
            store.append({"__name__": "req_total", "job": "api", "instance": instance}, t, float(i * 3))
    return store


def check_rules(store: SeriesStore, text: str, tmp_file: Path | None = None) -> None:
    """Groups or located problems; loaded groups evaluate without raising."""
    note(f"rule file: {text!r}")
    groups, problems = check_rule_text(text, "rules.yml")
    for problem in problems:
        assert isinstance(problem, RuleFileError)
        assert problem.file == "rules.yml" and problem.message.strip(), problem
        assert str(problem).startswith("rules.yml"), problem
    try:
        parsed = parse_rule_text(text, "rules.yml")
    except RuleFileError as exc:
        assert problems and str(exc) == str(problems[0])
    else:
        assert not problems
        assert [g.name for g in parsed] == [g.name for g in groups]
        manager = RuleManager(store, Engine(store), external_labels={"site": "fuzz"})
        manager.add_groups(parsed)
        for now_s in (T0_S, T0_S + 60):
            for loaded in parsed:
                manager.evaluate_group(loaded, now_s)
        json.dumps(manager.rules_status())
        for alert in manager.alerts():
            json.dumps(alert.to_json())
    if tmp_file is not None:
        tmp_file.write_text(text, encoding="utf-8", errors="surrogatepass")
        for issue in rule_file_issues(tmp_file, "rules.yml"):
            assert issue.line >= 1 and issue.column >= 1 and issue.message.strip(), issue


@fuzz_settings(250)
@given(data=rule_file_data())
def test_rule_shaped_data_gives_rules_or_located_problems(store: SeriesStore, data: Any) -> None:
    check_rules(store, dump(data))


@fuzz_settings(100)
@given(data=st.sampled_from([yaml.safe_load(p.read_text()) for p in RULE_FILES]).flatmap(mutated))
def test_broken_rule_files_give_rules_or_located_problems(store: SeriesStore, data: Any) -> None:
    check_rules(store, dump(data))


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzrules") / "rules.yml"


@fuzz_settings(150)
@given(text=yaml_text.map(lambda t: t.replace("app", "groups")))
# each of these was a traceback in rule_files.check_rule_text before the fix named beside it
@example(text="groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels: api\n")  # _string_map
@example(text="groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations: {a: [1]}\n")  # _string_map
@example(text="groups:\n- name: g\n  rules: 5\n")  # 'rules' must be a list
@example(text="groups:\n- name: g\n  limit: x\n  rules: []\n")  # 'limit' must be a whole number
@example(text="groups:\n- name: g\n  1: a\n  b: c\n")  # unknown keys of mixed types did not sort (_sorted_keys)
@example(text="groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 2024-02-30\n")  # LocatingSafeLoader
@example(text="groups: " + "[" * 3000 + "]" * 3000 + "\n")  # RecursionError in PyYAML
@example(text="groups:\n- name: g\x1f\n")  # a control character: located by its offset
def test_yaml_like_text_gives_rules_or_located_problems(store: SeriesStore, rule_file: Path, text: str) -> None:
    check_rules(store, text, rule_file)


def test_rule_file_issues_are_located_for_unreadable_files(tmp_path: Path, store: SeriesStore) -> None:
    for name, raw in (("latin1.yml", b"groups: [\xe9]\n"), ("control.yml", b"groups:\n- name: g\x1f\n")):
        path = tmp_path / name
        path.write_bytes(raw)
        issues = rule_file_issues(path, name)
        assert len(issues) == 1 and issues[0].file == name and issues[0].line >= 1, issues
