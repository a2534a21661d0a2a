"""The default rule pack is valid for a real Prometheus and fires on the right data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from lichen.observe.default_rules import default_rules, default_rules_yaml, latency_bucket_s
from lichen.sdk.instruments import LATENCY_BUCKETS_S, ReplicaMetrics, latency_buckets_s
from lichen.spec.models import AppSpec

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")

APP = AppSpec(
    app="shop",
    services={
        "api": {"entrypoint": "shop.api:Api", "slo": {"availability": 0.99, "latency_ms": 250, "latency_target": 0.95}},
        "ranker": {"entrypoint": "shop.rank:Ranker"},
    },
)


def alerts_by_name(service: str, app: AppSpec = APP) -> dict[str, list[dict]]:
    doc = default_rules(app)
    (group,) = [g for g in doc["groups"] if g["name"] == f"lichen-defaults-{service}"]
    out: dict[str, list[dict]] = {}
    for rule in group["rules"]:
        out.setdefault(rule["alert"], []).append(rule)
    return out


def test_pack_covers_every_service_and_every_default_alert() -> None:
    doc = default_rules(APP)
    assert [g["name"] for g in doc["groups"]] == [
        "lichen-defaults-api",
        "lichen-defaults-ranker",
        "lichen-defaults-scraping",
    ]
    rules = alerts_by_name("api")
    assert set(rules) == {
        "LichenReplicaDown",
        "LichenCrashLooping",
        "LichenHighErrorRatio",
        "LichenErrorBudgetBurn",
        "LichenLatencyBudgetBurn",
        "LichenInflightNearLimit",
    }
    burns = rules["LichenErrorBudgetBurn"]
    assert [r["labels"]["window"] for r in burns] == ["1h/5m", "6h/30m", "3d/6h"]
    # availability 0.99 -> budget 0.01; thresholds 14.4x, 6x, 1x
    assert [r["expr"].rsplit("> ", 1)[1] for r in burns] == ["0.144", "0.06", "0.01"]
    assert [r["labels"]["severity"] for r in burns] == ["page", "page", "ticket"]
    latency = rules["LichenLatencyBudgetBurn"]
    assert all('le="0.25"' in r["expr"] for r in latency)
    assert latency[0]["expr"].rsplit("> ", 1)[1] == "0.72"  # 14.4 * (1 - 0.95)
    ranker = alerts_by_name("ranker")["LichenLatencyBudgetBurn"][0]["expr"]
    assert 'le="0.3"' in ranker and 'service="ranker"' in ranker  # exactly the 300 ms objective


@pytest.mark.parametrize("latency_ms", [200, 300, 250, 1, 0.5, 7, 1234.5])
def test_the_latency_objective_reads_a_bucket_every_replica_has_exactly_at_its_threshold(latency_ms: float) -> None:
    """`slo.latency_ms: 200` used to become a 100 ms objective (le="0.1"): now the bucket is at 200 ms."""
    spec = AppSpec.model_validate({"app": "a", "services": {"s": {"entrypoint": "m:S", "slo": {"latency_ms": latency_ms}}}})
    burn = next(r for r in alerts_by_name("s", spec)["LichenLatencyBudgetBurn"])
    le = burn["expr"].split('le="', 1)[1].split('"', 1)[0]
    assert float(le) == latency_ms / 1000
    metrics = ReplicaMetrics(CollectorRegistry(), lambda: True, slo_latencies_ms=(latency_ms,))
    metrics.observe("/x", "GET", 200, latency_ms / 1000 * 0.999)  # just within the objective
    metrics.observe("/x", "GET", 200, latency_ms / 1000 * 1.001)  # just outside it
    lines = [line for line in metrics.render().decode().splitlines()
             if line.startswith("lichen_request_duration_seconds_bucket") and f'le="{le}"' in line]
    assert len(lines) == 1 and lines[0].endswith(" 1.0"), lines
    assert latency_bucket_s(latency_ms) == latency_ms / 1000
    assert set(LATENCY_BUCKETS_S) <= set(latency_buckets_s((latency_ms,)))  # the standard buckets stay


@needs_promtool
@pytest.mark.parametrize("evaluation_interval_s", [5.0, 0.5, 1.5])
def test_promtool_check_rules_accepts_the_pack(tmp_path: Path, evaluation_interval_s: float) -> None:
    app = APP.model_copy(
        update={"observability": APP.observability.model_copy(update={"evaluation_interval_s": evaluation_interval_s})}
    )
    path = tmp_path / "rules.yml"
    path.write_text(default_rules_yaml(app))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(len(g["rules"]) for g in yaml.safe_load(path.read_text())["groups"])
    assert f"SUCCESS: {total} rules found" in result.stdout


@needs_promtool
def test_promtool_and_lichen_unit_test_the_pack_fires_as_documented(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(default_rules_yaml(APP, interval="15s"))
    base = 'service="api",replica="api-1",instance="127.0.0.1:9001",revision="r1"'
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {"series": f"up{{{base}}}", "values": "1 1 0x10"},
                    {"series": f'lichen_requests_total{{{base},endpoint="predict",method="POST",status="200"}}',
                     "values": "0+60x40"},
                    {"series": f'lichen_requests_total{{{base},endpoint="predict",method="POST",status="500"}}',
                     "values": "0+15x40"},
                    {"series": f'lichen_inflight_requests{{{base},endpoint="predict"}}', "values": "62x20"},
                    {"series": f'lichen_max_concurrency{{{base},endpoint="predict"}}', "values": "64x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m15s",  # down since 30s: still pending
                        "alertname": "LichenReplicaDown",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "1m30s",
                        "alertname": "LichenReplicaDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "app": "shop",
                                    "severity": "critical",
                                    "service": "api",
                                    "replica": "api-1",
                                    "instance": "127.0.0.1:9001",
                                    "revision": "r1",
                                },
                                "exp_annotations": {
                                    "summary": "replica api-1 of api is down",
                                    "description": "127.0.0.1:9001 has not answered a scrape for 1 minute.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "9m",
                        "alertname": "LichenHighErrorRatio",
                        "exp_alerts": [
                            {
                                "exp_labels": {"app": "shop", "severity": "warning", "service": "api"},
                                "exp_annotations": {
                                    "summary": "api answers with 5xx too often",
                                    "description": "0.2 of requests over 5 minutes failed with a 5xx status"
                                    " (threshold 0.05).",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "3m",
                        "alertname": "LichenInflightNearLimit",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "app": "shop",
                                    "severity": "warning",
                                    "service": "api",
                                    "replica": "api-1",
                                    "instance": "127.0.0.1:9001",
                                    "revision": "r1",
                                    "endpoint": "predict",
                                },
                                "exp_annotations": {
                                    "summary": "api-1 of api is near its concurrency limit",
                                    "description": "In-flight requests are 0.96875 of the limit on predict.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Lichen's evaluator gives the same verdict on the same files
    from lichen.observe.promtool_tests import run_test_file

    lichen = run_test_file(test_file)
    assert lichen.ok, lichen.failures


def test_default_rule_groups_feed_the_rule_manager() -> None:
    from lichen.observe.default_rules import default_rule_groups

    groups = default_rule_groups(APP)
    assert [g.name for g in groups] == [g["name"] for g in default_rules(APP)["groups"]]
    assert sum(len(g.rules) for g in groups) == sum(len(g["rules"]) for g in default_rules(APP)["groups"])
    off = APP.model_copy(update={"observability": APP.observability.model_copy(update={"default_rules": False})})
    assert default_rule_groups(off) == []
