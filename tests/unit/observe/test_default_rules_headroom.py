"""Headroom and risk of every rule of the default pack, on the real series store, PromQL engine and
rule manager fed with synthetic samples (no sockets): healthy inputs give headroom near 1, inputs
exactly at a rule's threshold give 0, an absent series gives "no data", and `for:` keeps a pending
alert's risk below 1."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from lichen.control.headroom import PENDING_RISK, condition_of
from lichen.observe.dashboard import HeadroomEvaluator, build_overview
from lichen.observe.default_rules import default_rules_yaml, go_float
from lichen.observe.promql import Engine
from lichen.observe.rules import RuleManager
from lichen.observe.series import SeriesStore
from lichen.sdk.instruments import LATENCY_BUCKETS_S
from lichen.spec.models import AppSpec

APP = AppSpec(app="shop", services={"api": {"entrypoint": "shop.api:Api"}, "ranker": {"entrypoint": "shop.r:R"}})
STEP_S = 15.0
HISTORY_S = 3600.0
END_S = 1_700_000_000.0
REQUESTS_PER_S = 20.0
# the SDK's buckets plus the one each latency objective reads (a replica has a bucket at its SLO threshold)
SLO_BUCKETS = set(re.findall(r'le="([^"]+)"', default_rules_yaml(APP)))
BUCKET_LABELS = sorted({go_float(b) for b in LATENCY_BUCKETS_S} | SLO_BUCKETS | {"+Inf"}, key=float)


@dataclass(frozen=True)
class Inputs:
    """The service `api` as its replica and the controller would expose it, held steady for an hour."""

    error_share: float = 0.0
    slow_share: float = 0.0
    inflight: float = 2.0
    limit: float = 64.0
    restarts_per_10m: float = 0.0
    crashlooping: float = 0.0
    failed_scrapes_ago: tuple[int, ...] = ()  # scrapes that failed, counted back from the latest (0)
    requests: bool = True
    up_now: float = 1.0


def fill(store: SeriesStore, inputs: Inputs, end_s: float = END_S) -> None:
    target = {"service": "api", "revision": "r1", "replica": "api-0", "instance": "127.0.0.1:9001", "job": "replica"}
    endpoint = {**target, "endpoint": "predict", "method": "POST"}
    controller = {"instance": "127.0.0.1:7000", "job": "controller"}
    steps = int(HISTORY_S / STEP_S)
    for k in range(steps + 1):
        ago = steps - k
        t_s = end_s - STEP_S / 2 - ago * STEP_S  # off the window edges, so a 10m window holds 40 samples
        elapsed_s = k * STEP_S
        ms = int(t_s * 1000)
        up = inputs.up_now if ago == 0 else (0.0 if ago in inputs.failed_scrapes_ago else 1.0)
        store.append({"__name__": "up", **target}, ms, up)
        if inputs.requests:
            total = REQUESTS_PER_S * elapsed_s
            store.append({"__name__": "lichen_requests_total", **endpoint, "status": "200"}, ms,
                         total * (1 - inputs.error_share))
            store.append({"__name__": "lichen_requests_total", **endpoint, "status": "500"}, ms,
                         total * inputs.error_share)
            for le in BUCKET_LABELS:  # fast requests in the first bucket, slow ones past the last finite one
                share = 1.0 if le == "+Inf" else 1 - inputs.slow_share
                store.append({"__name__": "lichen_request_duration_seconds_bucket", **endpoint, "le": le}, ms,
                             total * share)
            store.append({"__name__": "lichen_request_duration_seconds_count", **endpoint}, ms, total)
        store.append({"__name__": "lichen_inflight_requests", **target, "endpoint": "predict"}, ms, inputs.inflight)
        store.append({"__name__": "lichen_max_concurrency", **target, "endpoint": "predict"}, ms, inputs.limit)
        store.append({"__name__": "lichen_replica_restarts_total", **controller, "service": "api"}, ms,
                     inputs.restarts_per_10m * elapsed_s / 600)
        store.append({"__name__": "lichen_replica_crashlooping", **controller, "service": "api", "replica": "api-0"},
                     ms, inputs.crashlooping)


@dataclass
class Pack:
    store: SeriesStore = field(default_factory=SeriesStore)

    def __post_init__(self) -> None:
        self.engine = Engine(self.store)
        self.rules = RuleManager(self.store, self.engine)
        self.rules.load_text(default_rules_yaml(APP))

    def overview(self, now_s: float = END_S) -> dict:
        return build_overview(app_name="shop", engine=self.engine, rules=self.rules,
                              headroom=HeadroomEvaluator(self.engine, self.rules, cache_s=0), now_s=now_s)


def pack_of(inputs: Inputs) -> Pack:
    pack = Pack()
    fill(pack.store, inputs)
    return pack


def alert_rules() -> list:
    """The alert rules of the service `api`, and the app-wide ones."""
    rules = [r for g in Pack().rules.groups for r in g.rules if r.kind == "alert"]
    return [r for r in rules if r.labels.get("service", "api") == "api"]


def rule_id(rule) -> str:
    window = rule.labels.get("window")
    return f"{rule.name}[{window}]" if window else rule.name


def row_of(overview: dict, rule, service: str = "api") -> dict:
    (row,) = [r for r in overview["headroom"]
              if r["alert"] == rule.name and r["labels"] == rule.labels and r["service"] == service]
    return row


def threshold_of(rule) -> float:
    """θ of the rule's condition (the burn-rate rules compare both windows to the same θ)."""
    condition = condition_of(rule.expr)
    assert condition is not None, f"{rule.name} has no threshold structure"
    return max(t.threshold for t in condition.thresholds())


# For each alert of the pack: inputs that put the value the rule compares exactly at its threshold.
AT_THRESHOLD: dict[str, Callable[[float], Inputs]] = {
    "LichenReplicaDown": lambda theta: Inputs(up_now=theta),  # `up == 0`: up at 0
    "LichenCrashLooping": lambda theta: Inputs(restarts_per_10m=theta),  # exactly 3 restarts in 10 minutes
    "LichenHighErrorRatio": lambda theta: Inputs(error_share=theta),
    "LichenErrorBudgetBurn": lambda theta: Inputs(error_share=theta),  # both windows at factor x budget
    "LichenLatencyBudgetBurn": lambda theta: Inputs(slow_share=theta),
    "LichenInflightNearLimit": lambda theta: Inputs(inflight=theta * 10, limit=10),
    # 4 of the 40 scrapes in 10 minutes failed, the latest succeeded: avg_over_time(up[10m]) = 0.9
    "LichenScrapeFailing": lambda theta: Inputs(failed_scrapes_ago=tuple(range(10, 10 + round((1 - theta) * 40)))),
}


def test_the_pack_has_a_threshold_scenario_for_every_alert() -> None:
    names = {r.name for r in alert_rules()}
    assert names == set(AT_THRESHOLD)  # a new default alert needs its own scenario here


def test_a_healthy_service_has_headroom_near_1_on_every_rule_and_low_risk() -> None:
    overview = pack_of(Inputs()).overview()
    for rule in alert_rules():
        row = row_of(overview, rule)
        assert row["headroom"] is not None and row["headroom"] >= 0.95, (rule_id(rule), row)
        assert row["state"] == "inactive"
    assert overview["risk"]["api"] <= 0.05
    # and the scrape rule reads "1 < 0.9" as fully healthy, not as 0.1 of headroom
    (scrape,) = [r for r in alert_rules() if r.name == "LichenScrapeFailing"]
    assert row_of(overview, scrape)["headroom"] == pytest.approx(1.0)


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_inputs_at_the_threshold_give_headroom_0(rule) -> None:
    theta = threshold_of(rule)
    row = row_of(pack_of(AT_THRESHOLD[rule.name](theta)).overview(), rule)
    assert row["headroom"] == pytest.approx(0.0, abs=1e-6), (rule_id(rule), row)


@pytest.mark.parametrize("rule", [r for r in alert_rules() if r.name != "LichenReplicaDown"], ids=rule_id)
def test_inputs_past_the_threshold_give_negative_headroom(rule) -> None:
    theta = threshold_of(rule)
    past = AT_THRESHOLD[rule.name](theta)
    past = {
        "LichenCrashLooping": lambda: replace(past, restarts_per_10m=2 * theta),
        "LichenInflightNearLimit": lambda: replace(past, inflight=10),
        "LichenScrapeFailing": lambda: replace(past, failed_scrapes_ago=tuple(range(10, 20))),
    }.get(rule.name, lambda: replace(past, error_share=2 * past.error_share, slow_share=2 * past.slow_share))()
    row = row_of(pack_of(past).overview(), rule)
    assert row["headroom"] is not None and row["headroom"] < -0.1, (rule_id(rule), row)


def test_a_crash_looping_replica_is_past_the_threshold_of_the_backoff_flag() -> None:
    (rule,) = [r for r in alert_rules() if r.name == "LichenCrashLooping"]
    assert row_of(pack_of(Inputs()).overview(), rule)["headroom"] == 1.0
    assert row_of(pack_of(Inputs(crashlooping=1.0)).overview(), rule)["headroom"] < -1e6  # breached


def test_absent_series_are_no_data_not_a_number() -> None:
    overview = pack_of(Inputs(requests=False)).overview()
    for rule in alert_rules():
        row = row_of(overview, rule)
        if rule.name in ("LichenHighErrorRatio", "LichenErrorBudgetBurn", "LichenLatencyBudgetBurn"):
            assert row["headroom"] is None and row["risk"] is None, row
            assert all(t["value"] is None for t in row["thresholds"])
        else:
            assert row["headroom"] is not None
    assert overview["risk"]["api"] is not None and overview["risk"]["api"] <= 0.05
    # a service with no series at all: every rule of it says "no data", and so does its risk
    ranker = [r for r in overview["headroom"] if r["service"] == "ranker"]
    assert ranker and all(r["headroom"] is None for r in ranker)
    assert overview["risk"]["ranker"] is None


def test_for_keeps_a_pending_alert_below_1_and_firing_is_1() -> None:
    pack = Pack()
    fill(pack.store, Inputs(error_share=0.2))  # HighErrorRatio holds over the whole hour
    (rule,) = [r for r in alert_rules() if r.name == "LichenHighErrorRatio"]
    assert rule.for_s == 300
    start = END_S - 400
    seen: dict[float, dict] = {}
    for k in range(0, 401, 5):
        now = start + k
        pack.rules.evaluate_due(now)
        if k in (0, 150, 295, 300, 400):
            seen[k] = row_of(pack.overview(now), rule)
    assert seen[0]["state"] == "pending" and seen[0]["risk"] == pytest.approx(PENDING_RISK)
    assert seen[150]["state"] == "pending" and 0.94 < seen[150]["risk"] < 0.95
    assert seen[295]["state"] == "pending" and seen[295]["risk"] < 1.0
    assert seen[300]["state"] == "firing" and seen[300]["risk"] == 1.0
    assert seen[400]["risk"] == 1.0
    assert seen[0]["headroom"] < 0  # the value is past the threshold all along; only the wait differs
