"""Canary rollouts (issue 13): how fast Lichen rolls back a bad canary under a real `lichen up`, beside Flagger.

What it measures. A service of ``replicas: 2`` with ``rollout: {strategy: canary, steps: [10, 50, 100],
analysis: {interval_s: 2, min_requests: 20}}`` (every other analysis setting at Lichen's default: confidence 0.98,
failure_limit 1, max_error_ratio 0.01, latency_margin_ms 25, max_inconclusive 6, on_inconclusive pause) runs
under a real `lichen up --detach` in a temporary app dir (`lichen down` in a finally). An **open-loop** load
(Poisson arrivals, seeded; each a new POST, which the gateway never retries) goes through the gateway, and every
answer carries the revision that served it (the service sets a response header from ``LICHEN_REVISION``), so the
load generator knows which revision answered each request, with its status and its latency from the scheduled
send time. 150 req/s by default (``--rate-per-s``, at least 100): at the 10 % step one 2 s interval then holds about
30 canary requests; at 100 req/s (20 expected) about half of the first analyses would be inconclusive and extend the
step. Each phase changes an env var in lichen.yaml and runs `lichen up` again:

* (a) a revision that answers exactly 30 % of its requests with a 500 (env ``FAIL_RATIO``; it returns the 500
  itself rather than raising, so the error still names its revision);
* (b) a revision 200 ms slower (env ``EXTRA_MS``); a request "fails" here when it is answered in more than the
  SLO, 150 ms (the service takes 5 ms otherwise);
* (c) an identical revision (only ``VERSION`` changes): it must be promoted with no failed request;
* (d) a 30 %-failing revision at 1 req/s: too little traffic to judge, it must never be promoted; it pauses after
  max_inconclusive inconclusive analyses, then the bench holds 10 s and runs `lichen rollout abort`.

Each phase starts from the stable revision the one before left (rolled back or promoted). Per phase: the time
from the canary's first request (the first one it answered) to the decision (the time of the ``CanaryAborted`` /
``CanaryPromoted`` / ``CanaryPaused`` event from ``GET /v1/events``, through the control API that
``.lichen/controller.json`` and ``.lichen/token`` name) and to weight 0 (the last request the canary answered); the
share of all requests that the bad revision answered and that failed, over a 60 s horizon from the canary's first
request (one Flagger interval; the open loop sends rate x 60 s requests in it whatever happens, so that is the
denominator, and the load stops once the canary is drained), and over its exposure (its first to its last request);
the verdict with the event's message.

False aborts of (c): in-process, the pure ``canary_analysis.analyse``/``step`` walk [10, 50, 100] 100 times
(seeded) on windows bootstrapped from the stable revision's real per-request outcomes and latencies in (c): per
interval a Poisson(rate x interval_s) number of requests, split binomially at the weight into two groups drawn
from the same recorded sample, latencies binned into the gateway's histogram buckets.

Beside each, Flagger as its code and docs say (sources at FLAGGER_* below) in a simple model: it analyses every
``interval`` and rolls back after ``threshold`` failed checks, so a bad canary keeps its first step's weight for
interval x threshold and fails weight x its failure ratio of all requests meanwhile.

Usage: .venv/bin/python bench/canary.py [--phase a|b|c|d ...] [--rate-per-s 150] [--runs 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp, wait_until  # noqa: E402
from _raw_http import RawClient  # noqa: E402
from autoscaling import free_port  # noqa: E402

from lichen.control import canary_analysis as ca  # noqa: E402
from lichen.gateway.metrics import LATENCY_BUCKETS_S  # noqa: E402

SERVICE = "work"
STEPS = [10, 50, 100]
ANALYSIS = {"interval_s": 2, "min_requests": 20}
"""the spec's analysis section; everything else at Lichen's defaults"""
SETTINGS = ca.AnalysisSettings(**ANALYSIS)
FAULT_RATIO = 0.3
EXTRA_MS = 200
SLO_S = 0.150
HORIZON_S = 60.0
LOW_RATE_PER_S = 1.0
WARMUP_S = 3.0
HOLD_PAUSED_S = 10.0
AFTER_S = 2.0
DECISIONS = ("CanaryAborted", "CanaryPromoted", "CanaryPaused")

# Flagger (github.com/fluxcd/flagger), defaults and documented examples:
# - pkg/apis/flagger/v1beta1/canary.go: `AnalysisInterval = 60 * time.Second` ("schedule interval (default 60s)",
#   at least 10 s) and `GetAnalysisThreshold` "returns the canary threshold (default 1)"; stepWeight and maxWeight
#   are optional fields without a default.
# - docs/gitbook/usage/deployment-strategies.md: "the time it takes for a canary to be rollback when the metrics or
#   webhook checks are failing: interval * threshold"; the minimum time to promote: interval * (maxWeight /
#   stepWeight). Its examples: interval 1m, threshold 10, maxWeight 50, stepWeight 2; docs/gitbook/how-it-works.md
#   and the tutorials: threshold 5, maxWeight 50, stepWeight 10 (the "threshold: 5" usually quoted is an example,
#   not the default, which is 1).
# - docs/gitbook/usage/metrics.md: the builtin checks request-success-rate (thresholdRange min 99 %) and
#   request-duration (P99, thresholdRange max 500 ms), each over interval 1m.
# - pkg/controller/scheduler_metrics.go: a builtin query with no values ("Halt advancement no values found ...
#   probably ... is not receiving traffic") fails the analysis, and pkg/controller/scheduler.go adds every failed
#   analysis to failedChecks: Flagger rolls an idle canary back after interval x threshold; it never promotes it.
FLAGGER_INTERVAL_S = 60.0
FLAGGER_THRESHOLD = 1
FLAGGER_THRESHOLD_DOCS = 5
FLAGGER_STEP_WEIGHT = 10  # the docs' usual example, and Lichen's first step here
FLAGGER_SUCCESS_MIN = 0.99
FLAGGER_P99_MAX_MS = 500.0

SERVICE_CODE = '''
import asyncio
import os

from pydantic import BaseModel
from starlette.responses import Response

from lichen import Service, endpoint

FAIL_RATIO = float(os.environ.get("FAIL_RATIO", "0"))
EXTRA_S = float(os.environ.get("EXTRA_MS", "0")) / 1000
HEADERS = {"x-bench-revision": os.environ.get("LICHEN_REVISION", "")}


class Order(BaseModel):
    text: str


class Work(Service):
    """5 ms per request (+ EXTRA_MS); exactly FAIL_RATIO of them answered 500; every answer names its revision."""

    def setup(self) -> None:
        self.served = 0

    @endpoint("/work", method="POST", max_concurrency=1000)
    async def work(self, order: Order) -> Response:
        await asyncio.sleep(0.005 + EXTRA_S)
        self.served += 1
        failed = int(self.served * FAIL_RATIO) != int((self.served - 1) * FAIL_RATIO)
        return Response(b'{"ok": false}' if failed else b'{"ok": true}', status_code=500 if failed else 200,
                        media_type="application/json", headers=HEADERS)
'''


@dataclass(frozen=True)
class Phase:
    key: str
    title: str
    env: dict[str, str]
    low_traffic: bool = False


PHASES = {
    "a": Phase("a", "30 % of requests fail", {"FAIL_RATIO": str(FAULT_RATIO)}),
    "b": Phase("b", f"+{EXTRA_MS} ms latency", {"EXTRA_MS": str(EXTRA_MS)}),
    "c": Phase("c", "identical (VERSION only)", {}),
    "d": Phase("d", f"30 % fail at {LOW_RATE_PER_S:g} req/s", {"FAIL_RATIO": str(FAULT_RATIO)}, low_traffic=True),
}


class CanaryApp(BenchApp):
    """BenchApp's throwaway app dir and CLI, with the revision-naming service and a canary rollout section."""

    def __init__(self, gateway_port: int) -> None:
        super().__init__(replicas=2)
        (self.dir / "benchsvc.py").write_text(SERVICE_CODE)
        self.port, self.url = gateway_port, f"http://127.0.0.1:{gateway_port}/work"
        self.write({"VERSION": "1"})

    def write(self, service_env: dict[str, str]) -> None:
        work = {"entrypoint": "benchsvc:Work", "replicas": 2, "termination_grace_s": 2, "routes": ["/work"],
                "env": service_env, "rollout": {"strategy": "canary", "steps": STEPS, "analysis": ANALYSIS}}
        spec = {"app": "canary-bench", "gateway": {"port": self.port}, "services": {SERVICE: work}}
        (self.dir / "lichen.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


# ------------------------------------------------------------------------------------------------ load
class RawPost(RawClient):
    """POST over raw asyncio streams (bench/_raw_http.py), keeping the header that names the revision that
    answered."""

    def __init__(self, url: str, body: bytes = b'{"text": "x"}') -> None:
        super().__init__(url, "POST", body)

    async def post(self) -> tuple[str, str | None]:
        """(the status or the error's class name, the answering revision)."""
        status, headers = await self.exchange()
        return status, headers.get("x-bench-revision") or None


Record = tuple[float, float | None, str, str | None, float]
"""(sent: wall s of the scheduled send, latency s from it (None: no HTTP answer), outcome, revision, send lag s)"""


class OpenLoad(threading.Thread):
    """Open loop: POSTs leave at seeded Poisson arrival times whatever the server does, until stopped."""

    def __init__(self, url: str, rate_per_s: float, seed: int, timeout_s: float = 10.0) -> None:
        super().__init__(daemon=True, name="open-loop")
        self.url, self.rate_per_s, self.seed, self.timeout_s = url, rate_per_s, seed, timeout_s
        self.records: list[Record] = []
        self.halt = threading.Event()
        self.start_mono = self.start_wall = 0.0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        client, rng = RawPost(self.url), random.Random(self.seed)
        self.start_mono, self.start_wall = time.monotonic(), time.time()
        tasks: set[asyncio.Task[None]] = set()
        at = rng.expovariate(self.rate_per_s)
        while not self.halt.is_set():
            delay = self.start_mono + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, 0.1))
                continue
            task = asyncio.create_task(self._one(client, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            at += rng.expovariate(self.rate_per_s)
        if tasks:
            await asyncio.gather(*tasks)
        client.close()

    async def _one(self, client: RawPost, at: float) -> None:
        due = self.start_mono + at
        lag = time.monotonic() - due
        try:
            outcome, revision = await asyncio.wait_for(client.post(), self.timeout_s)
        except TimeoutError:
            outcome, revision = "ReadTimeout", None
        latency = time.monotonic() - due if outcome.isdigit() else None
        self.records.append((self.start_wall + at, latency, outcome, revision, lag))


# ------------------------------------------------------------------------------------------------ figures (pure)
def is_error(record: Record) -> bool:
    return record[2] != "200"


def is_failed(record: Record, slo_s: float | None) -> bool:  # not a 200, or (with an SLO) answered later than it
    return is_error(record) or (slo_s is not None and (record[1] is None or record[1] > slo_s))


def phase_figures(records: list[Record], stable: str, events: list[dict[str, Any]], up_at: float, rate_per_s: float,
                  slo_s: float | None, horizon_s: float = HORIZON_S) -> dict[str, Any]:
    """What one phase came to: who answered, what failed, when the controller decided, relative to the canary's
    first request (the first request a revision other than ``stable`` answered)."""
    canary_records = [r for r in records if r[3] is not None and r[3] != stable]
    revisions = Counter(r[3] for r in canary_records)
    canary = revisions.most_common(1)[0][0] if revisions else None
    first = min((r[0] for r in canary_records), default=None)
    last = max((r[0] for r in canary_records), default=None)
    decision = next((e for e in events if e["kind"] in DECISIONS and e["at"] >= up_at), None)
    failed = [r for r in canary_records if is_failed(r, slo_s)]
    exposure = [r for r in records if first is not None and first <= r[0] <= last]
    lags = sorted(r[4] for r in records) or [0.0]
    started = next((e for e in events if e["kind"] == "CanaryStarted" and e["at"] >= up_at), None)
    answered_before = first is not None and (decision is None or first <= decision["at"])
    origin = first if answered_before else None  # a canary that answered nothing before the decision: no time

    def since(at: float | None, origin_at: float | None) -> float | None:
        return None if at is None or origin_at is None else round(at - origin_at, 3)

    verdict = {"CanaryAborted": "aborted", "CanaryPromoted": "promoted", "CanaryPaused": "paused"}.get(
        decision["kind"] if decision else "", "none")
    return {
        "requests": len(records), "rate_per_s": rate_per_s, "stable": stable, "canary": canary,
        "canary_requests": len(canary_records), "canary_failed": len(failed),
        "canary_errors": sum(1 for r in canary_records if is_error(r)),
        "errors_all_revisions": sum(1 for r in records if is_error(r)),
        "over_slo_all_revisions": sum(1 for r in records if not is_error(r) and r[1] is not None and r[1] > SLO_S),
        "outcomes": dict(Counter(r[2] for r in records)),
        "verdict": verdict, "decision_event": decision["kind"] if decision else None,
        "decision_message": decision["message"] if decision else None,
        "first_canary_to_decision_s": since(decision["at"] if decision else None, origin),
        "first_canary_to_weight0_s": since(last, first) if verdict == "aborted" else None,
        "decision_to_weight0_s": since(last, decision["at"]) if decision and verdict == "aborted" else None,
        "up_to_decision_s": since(decision["at"] if decision else None, up_at),
        "up_to_canary_started_s": since(started["at"] if started else None, up_at),
        "up_to_first_canary_s": since(first, up_at),
        "horizon_s": horizon_s, "horizon_requests": round(rate_per_s * horizon_s),
        "failed_share_horizon": len(failed) / (rate_per_s * horizon_s),
        "answered_share_horizon": len(canary_records) / (rate_per_s * horizon_s),
        "exposure_requests": len(exposure),
        "failed_share_exposure": len(failed) / len(exposure) if exposure else None,
        "promoted": any(e["kind"] == "CanaryPromoted" and e["at"] >= up_at for e in events),
        "send_lag_p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 1),
        "timeline_from": "the first canary answer" if answered_before else "`lichen up`",
        "timeline": [(since(e["at"], origin if answered_before else up_at), e["kind"], e["reason"], e["message"])
                     for e in events if e["at"] >= up_at and e["kind"].startswith("Canary")],
    }


def flagger_model(phase: str, rate_per_s: float, canary_p99_ms: float | None) -> dict[str, Any]:
    """Flagger with its defaults (interval 60 s, threshold 1) and with the docs' threshold 5, at a first step of
    FLAGGER_STEP_WEIGHT %: a bad canary keeps that weight until interval x threshold."""
    weight = FLAGGER_STEP_WEIGHT / 100
    rollback = {"default_s": FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD,
                "docs_threshold_5_s": FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD_DOCS}
    if phase == "a" or phase == "d":
        bad_share = FAULT_RATIO
        note = ("success rate 70 % < min 99 %: each analysis fails" if phase == "a" else
                f"{rate_per_s * weight * FLAGGER_INTERVAL_S:.0f} canary requests per 1m window (none: 'no values "
                "found', also a failed check): rolled back, never promoted (a healthy canary with 1 error in 6 too)")
    elif phase == "b":
        bad_share = 1.0  # every canary request is over the 150 ms SLO
        passes = canary_p99_ms is not None and canary_p99_ms < FLAGGER_P99_MAX_MS
        note = (f"request-duration P99 {canary_p99_ms or 0:.0f} ms < max {FLAGGER_P99_MAX_MS:.0f} ms (docs example): "
                "never rolled back, promoted" if passes else "P99 over its max: rolled back")
        if passes:
            rollback = {"default_s": None, "docs_threshold_5_s": None}
    else:
        bad_share = 0.0
        note = (f"promoted after one passed analysis per step: {len(STEPS)} x {FLAGGER_INTERVAL_S:g} s (docs: "
                f"interval x maxWeight/stepWeight = {FLAGGER_INTERVAL_S * 50 / FLAGGER_STEP_WEIGHT:g} s at 50/10)")
        return {"promote_s": len(STEPS) * FLAGGER_INTERVAL_S, "failed_share_horizon": 0.0, "note": note}
    return {**rollback, "failed_share_horizon": weight * bad_share,
            "failed_requests_by_rollback": None if rollback["default_s"] is None else
            round(rate_per_s * rollback["default_s"] * weight * bad_share), "note": note}


def window(latencies_s: np.ndarray, errors: np.ndarray, index: np.ndarray) -> ca.RevisionWindow:
    """The gateway's view of the requests at ``index``: count, errors, cumulative latency buckets."""
    chosen = latencies_s[index]
    buckets = tuple((le, float(np.count_nonzero(chosen <= le))) for le in LATENCY_BUCKETS_S)
    total = float(len(index))
    return ca.RevisionWindow(total, float(errors[index].sum()), (*buckets, (float("inf"), total)))


def false_aborts(latencies_s: list[float], errors: list[bool], rate_per_s: float, runs: int, seed: int,
                 settings: ca.AnalysisSettings = SETTINGS, max_intervals: int = 60) -> dict[str, Any]:
    """Walk STEPS ``runs`` times with canary and stable windows bootstrapped from the same sample."""
    lat, err, rng, steps = np.asarray(latencies_s, float), np.asarray(errors, bool), np.random.default_rng(seed), STEPS
    outcomes: Counter[str] = Counter()
    first_aborts, reasons, promote_s, inconclusive = 0, [], [], 0
    for run in range(runs):
        state, now = ca.CanaryState.begin(steps, 0.0), 0.0
        for _ in range(max_intervals):
            now += settings.interval_s
            total = int(rng.poisson(rate_per_s * settings.interval_s))
            n_canary = int(rng.binomial(total, state.weight / 100))
            canary = window(lat, err, rng.integers(0, len(lat), n_canary))
            stable = window(lat, err, rng.integers(0, len(lat), total - n_canary))
            verdict = ca.analyse(canary, stable, settings)
            inconclusive += verdict.kind == "inconclusive"
            state = ca.step(state, verdict, settings, steps, now).state
            if state.outcome or state.paused:
                break
        kind = state.outcome or ("paused" if state.paused else "unfinished")
        outcomes[kind] += 1
        if kind == "aborted":
            first_aborts += run < 20
            reasons.append(state.history[-1].reason)
        elif kind == "promoted":
            promote_s.append(now)
    return {"runs": runs, "sample_requests": len(lat), "sample_errors": int(err.sum()), "outcomes": dict(outcomes),
            "aborted": outcomes["aborted"], "aborted_in_first_20": first_aborts, "inconclusive_analyses": inconclusive,
            "abort_reasons": reasons[:5], "median_promote_s": float(np.median(promote_s)) if promote_s else None}


# ------------------------------------------------------------------------------------------------ phases
def settled(app: CanaryApp) -> str:
    """Waits until the service runs one revision on all of its replicas, no rollout in progress or settling."""
    with app.client() as control:
        def stable() -> str | None:
            status = control.status()
            work = status["services"][SERVICE]
            live = [r for r in status["replicas"] if r["service"] == SERVICE
                    and r["state"] not in ("Exited", "Terminating", "CrashLoopBackOff")]
            if work["canary"] is None and len(live) == work["desired"] and all(
                    r["state"] == "Ready" and r["revision"] == work["revision"] for r in live) \
                    and control.rollout(SERVICE)["phase"] == "stable":
                return str(work["revision"])
            return None

        return wait_until(stable, "one revision on every replica, no rollout", timeout_s=90, every_s=0.25)


def events_since(app: CanaryApp, at: float) -> list[dict[str, Any]]:
    with app.client() as control:
        return [e for e in control.events(SERVICE, limit=2000) if e["at"] >= at]


def run_phase(app: CanaryApp, phase: Phase, stable_env: dict[str, str], version: int, rate_per_s: float,
              seed: int) -> tuple[dict[str, Any], list[Record], bool]:
    """One rollout under load; returns (figures, the load's records, promoted)."""
    stable = settled(app)
    rate = LOW_RATE_PER_S if phase.low_traffic else rate_per_s
    env = {**stable_env, "VERSION": str(version), **phase.env}
    print(f"phase ({phase.key}) {phase.title}: {rate:g} req/s, env {env}, stable {stable}...", flush=True)
    load = OpenLoad(app.url, rate, seed)
    load.start()
    time.sleep(WARMUP_S)  # the stable revision's own sample first
    up_at = time.time()
    app.write(env)
    app.up()
    up_s = time.time() - up_at
    decided = wait_until(lambda: [e for e in events_since(app, up_at) if e["kind"] in DECISIONS],
                         f"phase ({phase.key})'s decision", timeout_s=120, every_s=0.2)
    manual = None
    if decided[0]["kind"] == "CanaryPaused":
        time.sleep(HOLD_PAUSED_S)  # paused: nothing may promote meanwhile
        manual = app.cli("rollout", "abort", SERVICE, "--reason", "bench: low-traffic canary left inconclusive").strip()
    settled(app)
    time.sleep(AFTER_S)
    load.halt.set()
    load.join(30)
    events = events_since(app, up_at)
    figures = phase_figures(list(load.records), stable, events, up_at, rate, SLO_S if phase.key == "b" else None)
    canary_latencies = sorted(r[1] for r in load.records if r[3] == figures["canary"] and r[1] is not None)
    p99 = 1000 * canary_latencies[int(0.99 * (len(canary_latencies) - 1))] if canary_latencies else None
    figures.update(title=phase.title, env=env, up_s=round(up_s, 2), manual_abort=manual,
                   canary_p99_ms=None if p99 is None else round(p99, 1),
                   flagger=flagger_model(phase.key, rate, p99))
    return figures, list(load.records), figures["promoted"]


# ------------------------------------------------------------------------------------------------ output
def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def targets(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    phases = results["phases"]
    for key, what in (("a", "errors"), ("b", f"over the {SLO_S * 1000:g} ms SLO")):
        if key in phases:
            f = phases[key]
            t = f["first_canary_to_decision_s"]
            ok = f["verdict"] == "aborted" and t is not None and t <= 10 and f["failed_share_horizon"] < 0.01
            detail = (f"{f['verdict']} after {secs(t)}, {f['canary_failed']} failed = "
                      f"{pct(f['failed_share_horizon'])} of {f['horizon_requests']} in {HORIZON_S:g} s")
            name = f"({key}) aborted <= 10 s after the first canary request, < 1 % of all requests failed ({what})"
            out.append((name, ok, detail))
    if "c" in phases:
        f, sim = phases["c"], results.get("false_aborts") or {}
        ok = f["verdict"] == "promoted" and f["errors_all_revisions"] == 0
        detail = (f"{f['verdict']} after {secs(f['first_canary_to_decision_s'])}, {f['errors_all_revisions']} "
                  f"failed of {f['requests']} ({f['over_slo_all_revisions']} over {SLO_S * 1000:g} ms, not counted)")
        out.append(("(c) promoted with 0 failed requests", ok, detail))
        if sim:
            detail = f"{sim['aborted_in_first_20']} in the first 20, {sim['aborted']} in {sim['runs']} runs"
            out.append(("(c) 0 false aborts in 20 runs", sim["aborted_in_first_20"] == 0, detail))
    if "d" in phases:
        f = phases["d"]
        detail = f"{f['verdict']} (then aborted by hand)" if f["manual_abort"] else f["verdict"]
        out.append(("(d) never promoted while inconclusive", not f["promoted"], detail))
    return out


def report(results: dict[str, Any]) -> None:
    phases = results["phases"]
    print(f"\nservice: replicas 2, 5 ms per request; rollout steps {STEPS}; analysis {ANALYSIS} (the rest at Lichen's "
          f"defaults: confidence {SETTINGS.confidence:g}, failure_limit {SETTINGS.failure_limit}, max_error_ratio "
          f"{SETTINGS.max_error_ratio:g}, latency_margin_ms {SETTINGS.latency_margin_ms:g}, max_inconclusive "
          f"{SETTINGS.max_inconclusive}, on_inconclusive {SETTINGS.on_inconclusive}, max_p95_ms "
          f"{SETTINGS.max_p95_ms}); open-loop Poisson POSTs through the gateway")
    print(f"failed = not 200 ((b): or answered in more than {SLO_S * 1000:g} ms); 'of all' = the bad revision's "
          f"failed requests / the rate x {HORIZON_S:g} s requests sent from its first request; 'exposure' = the same "
          "over the requests sent from its first to its last request")
    head = (f"  {'phase':<30}{'verdict':>9}{'1st->decision':>14}{'1st->weight 0':>14}{'canary req':>11}"
            f"{'failed':>8}{'of all':>9}{'exposure':>10} | {'Flagger rollback':>17}{'of all':>9}")
    print(head + "\n  " + "-" * (len(head) - 2))
    for key, f in phases.items():
        fl = f["flagger"]
        flag = (f"promote {fl['promote_s']:g} s" if key == "c" else "never" if fl.get("default_s") is None
                else f"{fl['default_s']:g} s / {fl['docs_threshold_5_s']:g} s")
        decided = secs(f["first_canary_to_decision_s"])
        if f["first_canary_to_decision_s"] is None and f["up_to_decision_s"] is not None:
            decided = f"{secs(f['up_to_decision_s'])}*"
        print(f"  {'(' + key + ') ' + f['title']:<30}{f['verdict']:>9}{decided:>14}"
              f"{secs(f['first_canary_to_weight0_s']):>14}{f['canary_requests']:>11}{f['canary_failed']:>8}"
              f"{pct(f['failed_share_horizon']):>9}{pct(f['failed_share_exposure']):>10} | {flag:>17}"
              f"{pct(fl['failed_share_horizon']):>9}")
    print(f"  Flagger: interval {FLAGGER_INTERVAL_S:g} s x threshold {FLAGGER_THRESHOLD} (its code default) / "
          f"{FLAGGER_THRESHOLD_DOCS} (docs examples); first stepWeight {FLAGGER_STEP_WEIGHT} %; a bad canary keeps "
          "that weight until it rolls back, so 'of all' = weight x its failing share\n  * from `lichen up`: the canary "
          "had answered no request before the decision")
    for key, f in phases.items():
        print(f"\n  ({key}) {f['title']}: canary {f['canary']}, stable {f['stable']}; {f['requests']} requests, "
              f"outcomes {f['outcomes']}; canary p99 {f['canary_p99_ms']} ms; send lag p99 {f['send_lag_p99_ms']} "
              f"ms; after `lichen up` ({f['up_s']:g} s): CanaryStarted {secs(f['up_to_canary_started_s'])}, first "
              f"canary answer {secs(f['up_to_first_canary_s'])}; decision -> weight 0 "
              f"{secs(f['decision_to_weight0_s'])}; times below from {f['timeline_from']}")
        for at, kind, reason, message in f["timeline"]:
            print(f"    {'-' if at is None else f'{at:+.2f} s':>9} {kind} ({reason}): {message[:300]}")
        if f["manual_abort"]:
            print(f"    by hand: {f['manual_abort'][:300]}")
        print(f"    Flagger: {f['flagger']['note']}")
    sim = results.get("false_aborts")
    if sim:
        print(f"\n(c) false aborts, in process: {sim['runs']} seeded walks through {STEPS} with analyse/step on "
              f"windows bootstrapped from {sim['sample_requests']} real requests of the stable revision in phase "
              f"({sim['sample_phase']}) ({sim['sample_errors']} errors) at {results['rate_per_s']:g} req/s: outcomes "
              f"{sim['outcomes']}, {sim['inconclusive_analyses']} inconclusive analyses, median promotion after "
              f"{sim['median_promote_s']} s"
              + (f"; aborts: {sim['abort_reasons']}" if sim["abort_reasons"] else ""))
    print(f"\ntargets (issue 13), {results['wall_s']:.0f} s in all:")
    for what, ok, detail in targets(results):
        print(f"  {'n/a' if ok is None else 'met' if ok else 'NOT met':>8}  {what}: {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", action="append", choices=sorted(PHASES), help="run this phase (repeatable)")
    parser.add_argument("--rate-per-s", type=float, default=150.0, help="the load of phases a-c (at least 100)")
    parser.add_argument("--runs", type=int, default=100, help="in-process walks for the false-abort count")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    keys = sorted(set(args.phase or PHASES))
    started = time.monotonic()
    results: dict[str, Any] = {"rate_per_s": args.rate_per_s, "steps": STEPS, "analysis_spec": ANALYSIS,
                               "settings": {k: getattr(SETTINGS, k) for k in SETTINGS.__dataclass_fields__},
                               "slo_ms": SLO_S * 1000, "horizon_s": HORIZON_S, "phases": {},
                               "flagger": {"interval_s": FLAGGER_INTERVAL_S, "threshold": FLAGGER_THRESHOLD,
                                           "threshold_docs": FLAGGER_THRESHOLD_DOCS, "step_weight": FLAGGER_STEP_WEIGHT,
                                           "success_min": FLAGGER_SUCCESS_MIN, "p99_max_ms": FLAGGER_P99_MAX_MS}}
    pool: dict[str, list[Record]] = {}
    app = CanaryApp(free_port())
    try:
        app.up()
        stable_env = {"VERSION": "1"}
        for i, key in enumerate(keys):  # every canary bumps VERSION: 2, 3, ...
            figures, records, promoted = run_phase(app, PHASES[key], stable_env, i + 2, args.rate_per_s, args.seed + i)
            results["phases"][key] = figures
            pool[key] = [r for r in records if r[3] == figures["stable"] and r[1] is not None]
            if promoted:
                stable_env = figures["env"]
    finally:
        app.down()
    source = "c" if "c" in pool else next((k for k in pool if not PHASES[k].low_traffic), None)
    if source is not None and pool[source]:
        sample = pool[source]
        results["false_aborts"] = false_aborts([r[1] for r in sample], [is_error(r) for r in sample],
                                               args.rate_per_s, args.runs, args.seed)
        results["false_aborts"]["sample_phase"] = source
    results["wall_s"] = time.monotonic() - started
    report(results)
    results["targets"] = [{"target": t, "met": ok, "detail": d} for t, ok, d in targets(results)]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
