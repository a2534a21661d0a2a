"""Run rule unit tests written in promtool's format (``promtool test rules``) on Lichen's evaluator.

Interface: ``run_test_file(path) -> TestFileResult`` (``.ok``, ``.failures`` as text lines,
``.report()`` in promtool's layout) and ``expand_series_values(text, interval_ms)``.

The harness mirrors ``cmd/promtool/unittest.go`` (Prometheus 2.x): input series use the
expanding notation (``1+2x3`` is ``1 3 5 7``, ``5x2`` is ``5 5 5``, ``_`` is a missing sample,
``_x3`` three of them, ``stale`` a stale marker), samples lie at ``i * interval`` from time 0,
every rule group is evaluated at each ``evaluation_interval`` step up to the largest
``eval_time``, alert tests compare the *firing* alerts of the evaluation at or just before their
``eval_time``, and ``promql_expr_test`` queries run afterwards at their ``eval_time``.
"""

from __future__ import annotations

import glob
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser as pp
import yaml

from lichen.control.alerting import FIRING
from lichen.errors import DataError
from lichen.spec.documents import LocatingSafeLoader
from lichen.observe.promql import Engine, QueryError, parse_promql
from lichen.observe.rule_files import load_rule_file, parse_duration_s
from lichen.observe.rules import RuleManager, format_go_float
from lichen.observe.series import STALE_NAN, SeriesStore, labels_key

_UNSIGNED = r"(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|[Ii]nf|NaN)"
_EXPANDING = re.compile(rf"^([-+]?{_UNSIGNED})(?:([-+]{_UNSIGNED}))?x(\d+)$")


def _number(text: str) -> float:
    t = text.lstrip("+")
    if t.lower() in ("inf", "-inf"):
        return math.inf if not t.startswith("-") else -math.inf
    if t.lower().lstrip("-").startswith("0x"):
        return float(int(t, 16))
    return float(t)


def expand_series_values(text: str, where: str = "") -> list[float | None]:
    """promtool's series notation to one entry per interval (None = missing sample)."""
    out: list[float | None] = []
    for item in str(text).split():
        if item == "_":
            out.append(None)
            continue
        if item.startswith("_x"):
            try:
                out.extend([None] * int(item[2:]))
            except ValueError:
                raise DataError(f"invalid series value {item!r}", where=where) from None
            continue
        if item == "stale":
            out.append(STALE_NAN)
            continue
        m = _EXPANDING.match(item)
        if m:
            start = _number(m.group(1))
            step = _number(m.group(2)) if m.group(2) else 0.0
            value = start
            for _ in range(int(m.group(3)) + 1):
                out.append(value)
                value += step
            continue
        try:
            out.append(_number(item))
        except ValueError:
            raise DataError(f"invalid series value {item!r}", where=where) from None
    return out


def _parse_metric(text: str, where: str) -> dict[str, str]:
    text = (text or "").strip()
    if text in ("", "{}"):
        return {}
    try:
        node = parse_promql(text)  # never pp.parse: a deeply nested text would crash the process
    except QueryError as exc:
        raise DataError(f"invalid series {text!r}: {exc.message}", where=where) from None
    if not isinstance(node, pp.VectorSelector):
        raise DataError(f"invalid series {text!r}: not a metric with labels", where=where)
    labels = {m.name: m.value for m in node.matchers.matchers}
    if node.name:
        labels["__name__"] = node.name
    return labels


@dataclass
class TestFileResult:
    path: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"Unit Testing:  {self.path}"]
        if self.ok:
            lines.append("  SUCCESS")
        else:
            lines.append("  FAILED:")
            lines.extend("    " + f for f in self.failures)
        return "\n".join(lines)


def _fmt_duration(ms: int) -> str:
    return pp.display_duration(__import__("datetime").timedelta(milliseconds=ms)) if ms else "0s"


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # close to Go's %q / strconv.Quote


def _fmt_labels(labels: tuple) -> str:
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in sorted(labels)) + "}"


def _fmt_alerts(alerts: list[tuple[tuple, tuple]]) -> str:
    """promtool's layout of an alert list (one index, Labels and Annotations per alert)."""
    if not alerts:
        return "[]"
    items = [f"            {i}:\n              Labels:{_fmt_labels(lab)}\n              Annotations:{_fmt_labels(ann)}" for i, (lab, ann) in enumerate(alerts)]
    return "[\n" + ",\n".join(items) + "\n            ]"


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return False  # promtool compares with reflect.DeepEqual, where NaN never equals NaN
    if a == b:
        return True
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def run_test_file(path: str | Path) -> TestFileResult:
    p = Path(path)
    result = TestFileResult(str(p))
    try:
        doc = yaml.load(p.read_text(), Loader=LocatingSafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read test file: {exc}", where=str(p)) from None
    if not isinstance(doc, dict):
        raise DataError("a test file needs 'rule_files' and 'tests'", where=str(p))
    eval_interval_ms = int(parse_duration_s(doc.get("evaluation_interval") or "1m", f"{p} evaluation_interval") * 1000)
    rule_paths: list[Path] = []
    for pattern in doc.get("rule_files") or []:
        full = pattern if Path(pattern).is_absolute() else str(p.parent / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            raise DataError(f"rule file {pattern!r} not found", where=f"{p} rule_files")
        rule_paths.extend(Path(m) for m in matches)
    order = doc.get("group_eval_order") or []
    for ti, test in enumerate(doc.get("tests") or []):
        name = test.get("name") or ""
        failures = _run_test_group(test, rule_paths, order, eval_interval_ms, f"{p} tests[{ti}]")
        if failures:
            header = f"name: {name}," if name else ""
            result.failures.extend(([header] if header else []) + failures)
    return result


def _run_test_group(test: dict, rule_paths: list[Path], order: list[str], eval_interval_ms: int, where: str) -> list[str]:
    interval_ms = int(parse_duration_s(test.get("interval"), where + ".interval") * 1000) or eval_interval_ms
    store = SeriesStore(retention_s=10 * 365 * 86400.0)
    for si, s in enumerate(test.get("input_series") or []):
        labels = _parse_metric(s.get("series", ""), f"{where}.input_series[{si}]")
        key = labels_key(labels)
        for i, value in enumerate(expand_series_values(s.get("values", ""), f"{where}.input_series[{si}]")):
            if value is not None:
                store.append(key, i * interval_ms, value)
    engine = Engine(store, subquery_step_s=eval_interval_ms / 1000)
    manager = RuleManager(
        store,
        engine,
        external_labels={str(k): str(v) for k, v in (test.get("external_labels") or {}).items()},
        external_url=str(test.get("external_url") or ""),
    )
    for rp in rule_paths:
        manager.add_groups(load_rule_file(rp))
    if order:
        rank = {n: i for i, n in enumerate(order)}
        manager.groups.sort(key=lambda g: rank.get(g.name, len(rank)))
    alert_tests = test.get("alert_rule_test") or []
    expr_tests = test.get("promql_expr_test") or []
    eval_times = [int(parse_duration_s(a.get("eval_time"), where) * 1000) for a in alert_tests]
    expr_times = [int(parse_duration_s(e.get("eval_time"), where) * 1000) for e in expr_tests]
    max_t = max(eval_times + expr_times + [0])
    by_time: dict[int, list[dict]] = {}
    for t, a in zip(eval_times, alert_tests, strict=True):
        by_time.setdefault(t, []).append(a)
    pending_times = sorted(by_time)
    failures: list[str] = []
    cur = 0
    ts = 0
    while ts <= max_t:
        for group in manager.groups:
            manager.evaluate_group(group, ts / 1000)
        errors = [
            f"rule: {r.name}, time: {_fmt_duration(ts)}, err: {r.last_error}"
            for g in manager.groups
            for r in g.rules
            if r.last_error
        ]
        if errors:
            return failures + errors
        while cur < len(pending_times) and ts <= pending_times[cur] < ts + eval_interval_ms:
            t = pending_times[cur]
            for case in by_time[t]:
                alertname = str(case.get("alertname", ""))
                got = sorted(
                    (a.labels, a.annotations)
                    for g in manager.groups
                    for r in g.rules
                    if r.kind == "alert" and r.name == alertname
                    for a in r.active.values()
                    if a.state == FIRING
                )
                exp = []
                for e in case.get("exp_alerts") or []:
                    lab = {str(k): str(v) for k, v in (e.get("exp_labels") or {}).items()}
                    lab["alertname"] = alertname
                    ann = {str(k): str(v) for k, v in (e.get("exp_annotations") or {}).items()}
                    exp.append((tuple(sorted(lab.items())), tuple(sorted(ann.items()))))  # expected empty values count, as in promtool
                exp.sort()
                if exp != got:
                    failures.append(
                        f"alertname: {alertname}, time: {_fmt_duration(t)}, \n"
                        f"        exp:{_fmt_alerts(exp)}, \n        got:{_fmt_alerts(got)}\n"
                    )
            cur += 1
        ts += eval_interval_ms
    for case, t in zip(expr_tests, expr_times, strict=True):
        expr = str(case.get("expr", ""))
        try:
            samples = engine.instant_samples(expr, t / 1000)
        except QueryError as exc:
            failures.append(f"expr: {_go_quote(expr)}, time: {_fmt_duration(t)}, err: {exc}\n")
            continue
        got = sorted((labels_key(lab), v) for lab, v in samples)
        exp = sorted(
            (labels_key(_parse_metric(str(s.get("labels", "")), where)), _expected_value(s.get("value", 0.0), where))
            for s in case.get("exp_samples") or []
        )
        same = len(got) == len(exp) and all(g[0] == e[0] and _close(g[1], e[1]) for g, e in zip(got, exp, strict=True))
        if not same:
            failures.append(
                f"expr: {_go_quote(expr)}, time: {_fmt_duration(t)},\n        exp: {_fmt_samples(exp)}\n        got: {_fmt_samples(got)}\n"
            )
    return failures


_GO_YAML_FLOAT = re.compile(r"[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _expected_value(value: object, where: str) -> float:
    """An exp_samples value as Go's YAML decoder reads it into a float64: ``NaN`` or a quoted string fails.

    PyYAML leaves ``1e3`` (no dot) a string, where Go reads a float; ``.nan``/``.inf`` are floats in both.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"cannot unmarshal {value!r} into float64 (exp_samples value)", where=where)
    if isinstance(value, str):
        if not _GO_YAML_FLOAT.fullmatch(value):
            raise DataError(f"cannot unmarshal !!str `{value}` into float64 (exp_samples value; write .nan, .inf or -.inf)", where=where)
        return float(value.replace("_", ""))
    return float(value)


def _fmt_samples(samples: list[tuple[tuple, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{_fmt_labels(lab)} {format_go_float(v, upper=True)}" for lab, v in samples)
