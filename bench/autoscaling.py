"""Elasticity (issue 12): Lichen's autoscaler under `lichen up`, beside simulations of HPA, KPA and Ray Serve.

What it measures. A service whose handler takes a fixed time (an async handler
holding a per-replica ``asyncio.Semaphore(C)`` and sleeping ``S`` s inside it:
C / S requests per second per replica, no CPU) runs under a real `lichen up`
with ``autoscale: {min: 1, max: 8, metric: inflight, target: C}`` and the
policy's *default* windows (stable 60 s, panic 6 s, no scale-down
stabilisation beyond the stable average, as KPA) and default probes. An **open-loop** load replays a trace: requests
leave on a schedule of **Poisson arrivals** (a non-homogeneous Poisson process
following the trace's rate), whatever the server does, each one recorded
(scheduled time, latency from its scheduled time, status or transport error).
Traces: ``step`` (5x up and back down), ``spike`` (a short 5x spike),
``diurnal`` (a smooth ramp up and down) and ``noise`` (a ramp to 2.5 replicas'
worth of load, then +-20 % noise: the load exactly at the target would
saturate the replicas, since target = C is their whole capacity).

While it runs, ``GET /v1/status`` is polled every 0.5 s (desired, ready and
running replicas), and afterwards ``GET /v1/events?service=work`` gives the
``Scaled`` events with reason ``autoscaler`` (decision times) and each new
replica's ``Started``/``Ready`` events (startup times).

The same arrivals are then replayed through pure simulations
(bench/_autoscaling_sims.py: a fluid FIFO queue in 50 ms steps) of Kubernetes'
HPA, Knative's KPA and Ray Serve with their projects' defaults (each cited
there), and of Lichen's own pure policy, all with the same target, the same
max and the **same replica startup**: the median time from an autoscaler
``Scaled`` event to the new replica's ``Ready`` event in this run.

Per run: time from the event to the first scale-up decision; time until the
ready capacity meets the event's rate; seconds with ready capacity below the
arrival rate; seconds over the SLO (a second whose requests, by send time,
have a p95 above 4 x S, or any failed request); failed requests (simulations:
requests that would wait more than 30 s, dropped); replica-seconds (running
replicas, starting ones included); flaps (changes of direction of the desired
count).

Then **cold start from zero** (``min: 0``, ``scale_to_zero_after_s: 5``; if
the service never reaches 0 the phase says so and the rest still runs): wait
for 0 desired / 0 ready, send one request and an open-loop burst right after,
and compare the first request's latency with the replica's own startup.

The SLO target counts a tie at 0 SLO-violation seconds as met (nothing can be
fewer than none).

Usage: .venv/bin/python bench/autoscaling.py [--quick] [--trace step] [--json out.json]
       (--trace one of step, spike, diurnal, noise, cold; repeatable; --sim-only skips lichen up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _autoscaling_sims as sims  # noqa: E402
from _control_plane_apps import BenchApp, cold_start_s, wait_until  # noqa: E402
from _raw_http import RawClient  # noqa: E402

SERVICE_TEMPLATE = '''
import asyncio

from lichen import Service, endpoint

CONCURRENCY = {concurrency}
SERVICE_S = {service_s}


class Work(Service):
    """{service_s} s per request, {concurrency} at a time per replica: a known capacity, no CPU."""

    slots = None

    @endpoint("/work", method="GET", max_concurrency=100000, timeout_s={timeout_s})
    async def work(self) -> dict:
        if self.slots is None:
            self.slots = asyncio.Semaphore(CONCURRENCY)
        async with self.slots:  # the rest wait here, counted in flight, as in the simulations' queue
            await asyncio.sleep(SERVICE_S)
        return {{"ok": True}}
'''
MAX_REPLICAS = 8
POLL_S = 0.5
COLD_AUTOSCALE = {"min": 0, "max": 4, "metric": "inflight", "scale_to_zero_after_s": 5}
"""the cold-start phase's autoscale section (target added)"""
SCALED = re.compile(r"(\d+)\s*(?:→|->)\s*(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ElasticApp(BenchApp):
    """BenchApp's throwaway app dir and CLI, with the fixed-time service and an autoscale section."""

    def __init__(self, service: sims.Service, autoscale: dict[str, Any], gateway_port: int) -> None:
        super().__init__(replicas=1)
        (self.dir / "benchsvc.py").write_text(SERVICE_TEMPLATE.format(
            concurrency=service.concurrency, service_s=service.service_s, timeout_s=service.timeout_s))
        work = {"entrypoint": "benchsvc:Work", "routes": ["/work"], "autoscale": autoscale}
        spec = {"app": "elastic", "gateway": {"port": gateway_port}, "services": {"work": work}}
        (self.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
        self.url = f"http://127.0.0.1:{gateway_port}/work"


class RawGet(RawClient):
    """GET over raw asyncio streams (bench/_raw_http.py): the status, or the error's class name."""

    async def get(self) -> str:
        return (await self.exchange())[0]


class OpenLoop(threading.Thread):
    """Sends one GET per scheduled time (s after start), never waiting for answers; records every outcome."""

    def __init__(self, url: str, schedule_s: list[float], timeout_s: float) -> None:
        super().__init__(daemon=True, name="open-loop")
        self.url, self.schedule_s, self.timeout_s = url, schedule_s, timeout_s
        self.records: list[tuple[float, float | None, str, float]] = []
        """(scheduled s, latency s from the scheduled time or None on failure, outcome, send lag s)"""
        self.started = threading.Event()
        self.start_mono = self.start_wall = 0.0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        client = RawGet(self.url)
        self.start_mono, self.start_wall = time.monotonic(), time.time()
        self.started.set()
        tasks = []
        for at in self.schedule_s:
            delay = self.start_mono + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(client, at)))
        await asyncio.gather(*tasks)
        client.close()

    async def _one(self, client: RawGet, at: float) -> None:
        due = self.start_mono + at
        lag = time.monotonic() - due
        try:
            outcome = await asyncio.wait_for(client.get(), self.timeout_s)
        except asyncio.TimeoutError:
            outcome = "ReadTimeout"
        latency = time.monotonic() - due
        self.records.append((at, latency if outcome == "200" else None, outcome, lag))


class Poller(threading.Thread):
    """Polls the controller's status: (wall time, desired, ready, running replicas, panic)."""

    def __init__(self, app: ElasticApp) -> None:
        super().__init__(daemon=True, name="status-poller")
        self.app, self.stop = app, threading.Event()
        self.samples: list[tuple[float, int, int, int, bool]] = []

    def run(self) -> None:
        with self.app.client() as control:
            while not self.stop.is_set():
                try:
                    status = control.status()
                except Exception:  # noqa: BLE001 - a slow answer under load is a missed sample, not an error
                    self.stop.wait(POLL_S)
                    continue
                work = status["services"]["work"]
                running = sum(1 for r in status["replicas"] if r["service"] == "work"
                              and r["state"] not in ("Exited", "CrashLoopBackOff"))
                panic = bool((work.get("autoscale") or {}).get("panic"))
                self.samples.append((time.time(), work["desired"], work["ready"], running, panic))
                self.stop.wait(POLL_S)


def autoscaler_decisions(events: list[dict[str, Any]], t0_wall: float) -> list[tuple[float, int, int]]:
    out = []
    for e in events:
        if e["kind"] == "Scaled" and e["reason"] == "autoscaler" and e["at"] >= t0_wall:
            found = SCALED.search(e["message"])
            if found:
                out.append((e["at"] - t0_wall, int(found.group(1)), int(found.group(2))))
    return out


def startup_times(events: list[dict[str, Any]], t0_wall: float, any_reason: bool = False) -> dict[str, float | None]:
    """Medians over the replicas started after t0: spawn (Started) -> Ready, and the autoscaler's (with
    ``any_reason``: any) Scaled event that asked for it -> Ready."""
    ups = sorted(e["at"] for e in events if e["kind"] == "Scaled" and (any_reason or e["reason"] == "autoscaler")
                 and (m := SCALED.search(e["message"])) and int(m.group(2)) > int(m.group(1)))
    started = {e["replica"]: e["at"] for e in events if e["kind"] == "Started" and e["at"] >= t0_wall}
    spawn, decision = [], []
    for replica, at in started.items():
        ready = min((e["at"] for e in events if e["kind"] == "Ready" and e["replica"] == replica
                     and e["at"] >= at), default=None)
        if ready is None:
            continue
        spawn.append(ready - at)
        asked = [u for u in ups if u <= at + 1e-3]
        if asked:
            decision.append(ready - asked[-1])

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 3) if values else None

    return {"spawn_to_ready_s": median(spawn), "decision_to_ready_s": median(decision), "replicas": len(spawn)}


def _ms(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(seconds * 1000, 1)


def real_run(trace: sims.Trace, schedule_s: list[float], service: sims.Service) -> tuple[sims.SimRun, dict]:
    """The trace under a real `lichen up`; `lichen down` always."""
    port = free_port()
    autoscale = {"min": 1, "max": MAX_REPLICAS, "metric": "inflight", "target": service.concurrency}
    app = ElasticApp(service, autoscale, port)
    poller = Poller(app)
    try:
        app.up()
        with app.client() as control:
            wait_until(lambda: control.status()["services"]["work"]["ready"] >= 1, "the first ready replica", 60)
        poller.start()
        time.sleep(2 * POLL_S)
        load = OpenLoop(app.url, schedule_s, service.timeout_s + 5)
        load.start()
        load.started.wait(30)
        load.join(trace.duration_s + service.timeout_s + 60)
        if load.is_alive():
            print(f"  warning: {trace.name}: the load did not finish; {len(load.records)} of {len(schedule_s)} "
                  "requests have an outcome", file=sys.stderr)
        poller.stop.set()
        poller.join(15)
        with app.client() as control:
            events = control.events("work", limit=10000)
    finally:
        app.down()
    t0 = load.start_wall
    run = sims.SimRun("Lichen (real)")
    run.requests = [(at, latency, 1.0) for at, latency, _, _ in load.records]
    answered = {at for at, *_ in load.records}
    run.requests += [(at, None, 1.0) for at in schedule_s if at not in answered]  # never answered: failed
    run.decisions = autoscaler_decisions(events, t0)
    samples = [(max(0.0, wall - t0), desired, ready, running) for wall, desired, ready, running, _ in poller.samples]
    run.ready = [(0.0, samples[0][2] if samples else 1)]
    for t, _, ready, _ in samples:
        if ready != run.ready[-1][1]:
            run.ready.append((t, ready))
    for (t, _, _, running), (t_next, *_) in zip(samples, [*samples[1:], (trace.duration_s,)]):
        run.replica_s += running * max(0.0, min(t_next, trace.duration_s) - min(t, trace.duration_s))
    startups = startup_times(events, t0)
    run.startup_s = startups["decision_to_ready_s"]
    outcomes: dict[str, int] = {}
    for _, _, outcome, _ in load.records:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    per_second: dict[int, list[float]] = {}
    for at, latency, _, _ in load.records:
        per_second.setdefault(int(at), []).append(float("inf") if latency is None else latency)
    lags = sorted(lag for *_, lag in load.records) or [0.0]
    extra = {"startup": startups, "outcomes": outcomes, "send_lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))]
                                                                                   * 1000, 1),
             "timeline": [(round(t, 2), d, r, n) for t, d, r, n in samples],
             "per_second": [(sec, len(v), _ms(sorted(v)[len(v) // 2]), _ms(sorted(v)[int(0.95 * (len(v) - 1))]))
                            for sec, v in sorted(per_second.items())],  # (s, sent, p50 ms, p95 ms; None: failed)
             "panic_samples": sum(1 for *_, p in poller.samples if p)}
    return run, extra


def cold_start(service: sims.Service) -> dict[str, Any]:
    """Scale from zero: one request and a burst at 0 replicas; guarded, never fatal."""
    result: dict[str, Any] = {"status": "not run"}
    port = free_port()
    app = ElasticApp(service, {**COLD_AUTOSCALE, "target": service.concurrency}, port)
    try:
        result["startup_alone_s"] = round(statistics.median(cold_start_s(app.dir) for _ in range(3)), 3)
        try:  # NOT BUILT YET (scale to zero): validate and up may refuse min: 0 / scale_to_zero_after_s
            app.cli("validate", str(app.dir))
            app.up()
        except SystemExit as exc:
            result.update(status="skipped", reason=f"lichen refused the min: 0 spec: {str(exc).strip()[-300:]}")
            return result
        with app.client() as control:
            def at_zero() -> bool:
                work = control.status()["services"]["work"]
                return work["desired"] == 0 and work["ready"] == 0

            try:
                wait_until(at_zero, "0 desired / 0 ready", timeout_s=60, every_s=0.25)
            except SystemExit:
                work = control.status()["services"]["work"]
                result.update(status="skipped", reason=f"never scaled to zero in 60 s (desired {work['desired']}, "
                              f"ready {work['ready']}): scale to zero not built yet?")
                return result
            time.sleep(1.0)
            burst_rate = 0.25 * service.capacity_per_s
            schedule = [0.0] + [0.05 + i / burst_rate for i in range(round(3 * burst_rate))]
            load = OpenLoop(app.url, schedule, service.timeout_s + 5)
            load.start()
            load.started.wait(30)
            load.join(service.timeout_s + 60)
            events = control.events("work", limit=2000)
    finally:
        app.down()
    first = next((r for r in load.records if r[0] == 0.0), None)
    startups = startup_times(events, load.start_wall, any_reason=True)
    wake = next((e for e in events if e["kind"] == "Scaled" and e["at"] >= load.start_wall), None)
    if wake is not None:
        result["wake_event"] = (f"+{wake['at'] - load.start_wall:.3f} s Scaled ({wake['reason']}): "
                                f"{wake['message'][:100]}")
    failed = sum(1 for r in load.records if r[1] is None) + len(schedule) - len(load.records)
    startup = startups["spawn_to_ready_s"] or result["startup_alone_s"]
    result.update(status="ran", first_latency_s=None if first is None or first[1] is None else round(first[1], 3),
                  first_outcome=None if first is None else first[2], replica_startup_s=startups["spawn_to_ready_s"],
                  startup_used_s=startup, burst_requests=len(schedule) - 1, dropped=failed,
                  decision_to_ready_s=startups["decision_to_ready_s"])
    if result["first_latency_s"] is not None:
        result["cold_minus_startup_s"] = round(result["first_latency_s"] - startup, 3)
    return result


# ------------------------------------------------------------------------------------------------ output
COLUMNS = [("1st decision", "first_decision_s", "s"), ("cap. met", "time_to_capacity_s", "s"),
           ("under cap", "under_capacity_s", "s"), ("SLO-viol", "slo_violation_s", "s"),
           ("fail/drop", "failed_or_dropped", ""), ("p95", "p95_ms", "ms"), ("replica-s", "replica_s", ""),
           ("flaps", "flaps", ""), ("max", "max_desired", "")]
WIDTH = 12
LEGEND = textwrap.fill(
    "columns: 1st decision = event -> first scale-up decision; cap. met = event -> ready capacity >= the event's "
    "rate (real: from 0.5 s status polls); under cap = seconds with ready capacity below the arrival rate; "
    "SLO-viol = seconds (by send time) whose p95 is over the SLO or with a failure; fail/drop = failed requests "
    "(real) or requests that would wait > 30 s (sims); p95 over the whole trace; replica-s = integral of running "
    "replicas, starting ones included; flaps = changes of direction of the desired count; max = highest desired "
    "count.", 116, subsequent_indent="  ") + "\n" + textwrap.fill(
    f"peers (defaults; sources in bench/_autoscaling_sims.py): HPA sync {sims.HPA_SYNC_PERIOD_S:g} s, tolerance "
    f"{sims.HPA_TOLERANCE:g}, scale-down stabilisation {sims.HPA_DOWNSCALE_STABILIZATION_S:g} s, scale-up "
    f"max(+{sims.HPA_SCALE_UP_PODS} pods, +{sims.HPA_SCALE_UP_PERCENT} %) per {sims.HPA_SCALE_UP_PERIOD_S:g} s, "
    f"metric = mean over {sims.HPA_METRIC_RESOLUTION_S:g} s; KPA tick {sims.KPA_TICK_S:g} s, stable "
    f"{sims.KPA_STABLE_WINDOW_S:g} s, panic {sims.KPA_PANIC_WINDOW_S:g} s at {sims.KPA_PANIC_THRESHOLD:g}x, "
    f"up-rate {sims.KPA_MAX_SCALE_UP_RATE:g}, down-rate {sims.KPA_MAX_SCALE_DOWN_RATE:g}; Ray look-back "
    f"{sims.RAY_LOOK_BACK_PERIOD_S:g} s, upscale delay {sims.RAY_UPSCALE_DELAY_S:g} s, downscale delay "
    f"{sims.RAY_DOWNSCALE_DELAY_S:g} s, reports every {sims.RAY_METRICS_INTERVAL_S:g} s, smoothing "
    f"{sims.RAY_SMOOTHING_FACTOR:g}, counts only the requests at its replicas (at most "
    f"{sims.RAY_MAX_ONGOING_PER_TARGET:g}x the target each). Same target, max and replica startup for all.",
    116, subsequent_indent="  ")


def cell(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:g} {unit}".strip() if isinstance(value, float) else f"{value} {unit}".strip()


def print_table(name: str, trace: sims.Trace, rows: dict[str, dict[str, Any]], note: str) -> None:
    print(f"\ntrace {name}: {trace.description} ({trace.duration_s:g} s)")
    print(f"  {note}")
    head = f"  {'run':<22}" + "".join(f"{title:>{WIDTH}}" for title, _, _ in COLUMNS)
    print(head)
    print("  " + "-" * (len(head) - 2))
    for run, figs in rows.items():
        print(f"  {run:<22}" + "".join(f"{cell(figs.get(key), unit):>{WIDTH}}" for _, key, unit in COLUMNS))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def targets(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    traces = results["traces"]
    real = {name: t["rows"].get("Lichen (real)") for name, t in traces.items()}
    if real.get("step"):
        first = real["step"]["first_decision_s"]
        out.append(("first decision <= 2 s after a 5x step", first is not None and first <= 2.0,
                    f"{cell(first, 's')}"))
    ran = {n: f for n, f in real.items() if f}
    if ran:
        failed = {n: f["failed_or_dropped"] for n, f in ran.items()}
        out.append(("0 failed requests, up and down", sum(failed.values()) == 0,
                    ", ".join(f"{n} {v}" for n, v in failed.items())))
    if real.get("noise"):
        out.append(("0 flaps under +-20 % noise", real["noise"]["flaps"] == 0, f"{real['noise']['flaps']} flaps"))
    for name, f in ran.items():
        rows = traces[name]["rows"]
        peers = {n: r for n, r in rows.items() if n not in ("Lichen (real)", "Lichen policy (sim)")}
        fewer = all(f["slo_violation_s"] < r["slo_violation_s"] or f["slo_violation_s"] == r["slo_violation_s"] == 0
                    for r in peers.values())
        kpa = rows.get("Knative KPA (sim)", {}).get("replica_s")
        cheaper = kpa is not None and f["replica_s"] <= kpa
        detail = (f"SLO-viol {f['slo_violation_s']} s vs " + ", ".join(f"{n.split(' (')[0]} {r['slo_violation_s']}"
                                                                        for n, r in peers.items())
                  + f"; replica-s {f['replica_s']:g} vs KPA {cell(kpa, '')}")
        out.append((f"{name}: fewer SLO-violation s than each peer at <= KPA's replica-s", fewer and cheaper, detail))
    cold = results.get("cold")
    if cold:
        if cold.get("status") != "ran" or cold.get("first_latency_s") is None:
            out.append(("cold start <= startup + 0.5 s, 0 dropped", None, cold.get("reason", cold.get("status"))))
        else:
            ok = cold["first_latency_s"] <= cold["startup_used_s"] + 0.5 and cold["dropped"] == 0
            out.append(("cold start <= startup + 0.5 s, 0 dropped", ok,
                        f"first {cold['first_latency_s']:g} s, startup {cold['startup_used_s']:g} s, "
                        f"dropped {cold['dropped']}"))
    return out


# ------------------------------------------------------------------------------------------------ main
def run_trace(name: str, args: argparse.Namespace, service: sims.Service) -> dict[str, Any]:
    trace = sims.build_trace(name, service.capacity_per_s, args.quick, args.seed)
    schedule = sims.poisson_arrivals(trace, args.seed)
    counts = sims.arrivals_per_step(schedule, len(trace.rates_per_s))
    rows: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    startup = args.startup_s
    if not args.sim_only:
        print(f"running {name} under lichen up ({trace.duration_s:g} s, {len(schedule)} requests)...", flush=True)
        real, extra = real_run(trace, schedule, service)
        rows[real.name] = sims.figures(real, trace, service)
        extra["decisions"] = real.decisions
        measured = real.startup_s or extra["startup"]["spawn_to_ready_s"]
        startup = measured if measured is not None else startup
    note = (f"{len(schedule)} requests, Poisson arrivals; sims use a replica startup of {startup:g} s "
            + ("(given: --sim-only)" if args.sim_only else
               f"(median Scaled -> Ready in this run; spawn -> Ready {cell(extra['startup']['spawn_to_ready_s'], 's')}"
               f", {extra['startup']['replicas']} replicas; client send lag p99 {extra['send_lag_p99_ms']} ms)"))
    sim_decisions = {}
    for run in sims.simulate_all(trace, counts, service, startup, MAX_REPLICAS):
        rows[run.name] = sims.figures(run, trace, service)
        sim_decisions[run.name] = run.decisions
    print_table(name, trace, rows, note)
    for run_name, decisions in [("Lichen (real)", extra.get("decisions", [])), *sim_decisions.items()]:
        if decisions or run_name == "Lichen (real)" and not args.sim_only:
            print(f"    {run_name:<22} " + " ".join(f"{t:.1f}s:{a}->{b}" for t, a, b in decisions[:12])
                  + (" ..." if len(decisions) > 12 else ""))
    return {"description": trace.description, "duration_s": trace.duration_s, "requests": len(schedule),
            "startup_s": startup, "rows": rows, "real": extra, "sim_decisions": sim_decisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short traces, for development")
    parser.add_argument("--trace", action="append", choices=[*sims.TRACES, "cold"],
                        help="run only this phase (repeatable); default: all four traces and the cold start")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--sim-only", action="store_true", help="no lichen up: the simulations only")
    parser.add_argument("--startup-s", type=float, default=1.0, help="replica startup for --sim-only")
    parser.add_argument("--concurrency", type=int, default=4, help="C: requests per replica at a time")
    parser.add_argument("--service-ms", type=float, default=50.0, help="S: ms per request")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    service = sims.Service(concurrency=args.concurrency, service_s=args.service_ms / 1000,
                           slo_s=4 * args.service_ms / 1000)
    phases = args.trace or [*sims.TRACES, "cold"]
    print(f"service: {service.concurrency} at a time x {args.service_ms:g} ms = {service.capacity_per_s:g} req/s per "
          f"replica; autoscale min 1, max {MAX_REPLICAS}, inflight, target "
          f"{service.concurrency}, default windows; SLO: p95 <= {service.slo_s * 1000:g} ms per second, no failure")
    print(LEGEND)
    results: dict[str, Any] = {"quick": args.quick, "service": asdict(service), "max_replicas": MAX_REPLICAS,
                               "traces": {}}
    started = time.monotonic()
    for name in phases:
        if name != "cold":
            results["traces"][name] = run_trace(name, args, service)
    if "cold" in phases and not args.sim_only:
        print("\ncold start from zero (min: 0, scale_to_zero_after_s: 5)...", flush=True)
        cold = results["cold"] = cold_start(service)
        for key, value in cold.items():
            print(f"  {key}: {value}")
        print(f"  (Knative scales to zero only after scale-to-zero-grace-period {sims.KPA_SCALE_TO_ZERO_GRACE_S:g} s;"
              " HPA keeps minReplicas >= 1 by default; Ray's downscale_delay_s is 600 s)")
    print(f"\ntargets (issue 12), {time.monotonic() - started:.0f} s in all:")
    for what, ok, detail in targets(results):
        print(f"  {verdict(ok):>8}  {what}: {detail}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
