"""``lichen chaos``: faults injected into a running app under an open-loop load, measured, and always undone.

A run starts the experiment's load (:mod:`lichen.trials.load_generation`)
against the app's gateway, injects each fault at its time, and meanwhile
samples the controller every 100 ms: its events (who noticed what, when) and
its status (every wanted replica ready, the gateway ready). From those and the
per-request log it measures, per fault, the time to detect, the time to
recover and the requests that failed (:mod:`lichen.control.chaos_verdicts`),
plus the gateway's retries over the run and the processes left orphaned at
the end.

Faults:

* ``kill_replica``: ``kill -9`` of ``count`` (default 1) or ``percent`` of the
  service's ready replicas;
* ``pause_replica``: ``SIGSTOP`` of one (or ``count``/``percent``) for
  ``for`` seconds, then ``SIGCONT``: a hang, not a crash;
* ``kill_gateway``: ``kill -9`` of the gateway process;
* ``kill_controller``: ``kill -9`` of the controller, then ``lichen up
  --detach`` as an operator (or a unit file) would; the data plane must
  carry on meanwhile and the new controller must adopt every process.

Every fault that lasts is written to a restore list as it is applied; on the
way out, interrupted or not, stopped processes are resumed and a killed
controller is started again, and the run says what it restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lichen.control.chaos_verdicts import (FaultOutcome, at_full_strength, detected_after, failed_between, judge,
                                           recovered_after)
from lichen.control.load_profiles import arrival_offsets, shaped
from lichen.runtime import teardown
from lichen.runtime.workspaces import Workspace, read_controller_info, read_token
from lichen.spec.experiments import TRAFFIC_FAULTS, UNDETECTED, ExperimentSpec, FaultSpec
from lichen.spec.models import AppSpec
from lichen.trials.load_generation import LoadEngine, build_target
from lichen.trials.load_reports import summary

SAMPLE_S = 0.1
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


@dataclass
class Injection:
    fault: FaultSpec
    injected_s: float
    targets: list[str]
    pids: list[int]
    note: str = ""


@dataclass
class Observations:
    """What the sampler saw: ``(t_s, healthy)`` and events as ``(t_s, service, replica, kind)``."""

    healthy: list[tuple[float, bool]] = field(default_factory=list)
    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    last_event_id: int = 0


class ChaosRun:
    def __init__(self, workspace: Workspace, app: AppSpec, experiment: ExperimentSpec, gateway_url: str,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.workspace = workspace
        self.app = app
        self.experiment = experiment
        self.gateway_url = gateway_url
        self.say = say
        self.injections: list[Injection] = []
        self.paused: set[int] = set()
        self.traffic: dict[str, list[tuple[FaultSpec, float]]] = {}
        """live traffic faults per service, each with the wall time it ends"""
        self.controller_down = False
        self.restored: list[str] = []
        self.seen = Observations()
        self.t0_wall = 0.0
        self.t0 = 0.0

    # ---------------------------------------------------------------- run
    async def run(self) -> dict[str, Any]:
        experiment = self.experiment
        load = experiment.load
        target = build_target(self.gateway_url, load.paths(), load.method)
        profile = shaped("constant", load.rate, experiment.run_s())
        engine = LoadEngine(target, arrival_offsets(profile), timeout_s=load.timeout_s, keep_log=True)
        retries_before = await self._gateway_retries()
        load_task = asyncio.ensure_future(engine.run())
        await asyncio.sleep(0)  # the engine has set its start time
        self.t0, self.t0_wall = engine.start, time.time() + (engine.start - time.perf_counter())
        sampler = asyncio.ensure_future(self._sample())
        try:
            for fault in sorted(experiment.faults, key=lambda f: f.at):
                await asyncio.sleep(max(0.0, self.t0 + fault.at - time.perf_counter()))
                await self._inject(fault)
            result = await load_task
            await self._settle()
            orphans = await self._orphans()
        finally:
            sampler.cancel()
            self.restore()
            if not load_task.done():
                load_task.cancel()
        retries_after = await self._gateway_retries()
        # a restarted gateway starts its counter again (as Prometheus' increase() reads a reset)
        retries = retries_after - retries_before if retries_after >= retries_before else retries_after
        return self._report(result, profile, retries, orphans)

    async def _settle(self) -> None:
        """Give a fault injected late a few seconds more to recover before judging."""
        deadline = time.perf_counter() + 15.0
        while time.perf_counter() < deadline and not (self.seen.healthy and self.seen.healthy[-1][1]):
            await asyncio.sleep(SAMPLE_S)

    # ------------------------------------------------------------- faults
    async def _inject(self, fault: FaultSpec) -> None:
        now_s = time.perf_counter() - self.t0
        if fault.kind in ("kill_replica", "pause_replica"):
            replicas = [r for r in (await self._status()).get("replicas", [])
                        if r["service"] == fault.service and r["state"] == "Ready" and r.get("pid")]
            replicas.sort(key=lambda r: r["id"])
            wanted = fault.count or (math.ceil(len(replicas) * fault.percent / 100) if fault.percent else 1)
            chosen = replicas[:wanted]
            if not chosen:
                self.injections.append(Injection(fault, now_s, [], [], "no ready replica to hit"))
                self.say(f"{now_s:6.2f} s  {fault.kind} {fault.service}: no ready replica to hit")
                return
            pids = [int(r["pid"]) for r in chosen]
            if fault.kind == "kill_replica":
                self._signal(pids, signal.SIGKILL)
            else:
                self._signal(pids, signal.SIGSTOP)
                self.paused.update(pids)
                asyncio.get_running_loop().call_later(fault.for_s or 0.0, self._resume, pids)
            self.injections.append(Injection(fault, now_s, [r["id"] for r in chosen], pids))
            self.say(f"{now_s:6.2f} s  {fault.kind} {', '.join(r['id'] for r in chosen)} (pid {', '.join(map(str, pids))})"
                     + (f" for {fault.for_s:g} s" if fault.for_s else ""))
        elif fault.kind in TRAFFIC_FAULTS:
            assert fault.service is not None and fault.for_s is not None
            self.traffic.setdefault(fault.service, []).append((fault, time.time() + fault.for_s))
            await self._put_faults(fault.service)
            asyncio.get_running_loop().call_later(fault.for_s, lambda: asyncio.ensure_future(
                self._end_traffic_fault(fault)))
            self.injections.append(Injection(fault, now_s, [fault.service], []))
            what = (f"+{fault.delay_ms:g} ms" if fault.kind == "latency" else
                    f"{fault.status or 503} answers" if fault.kind == "errors" else "connection resets")
            self.say(f"{now_s:6.2f} s  {fault.kind} on {fault.service}: {what} for {fault.percent or 100:g} % of "
                     f"requests, {fault.for_s:g} s")
        elif fault.kind == "rolling_restart":
            await self._api("POST", f"/v1/services/{fault.service}/restart", timeout_s=10.0)
            self.injections.append(Injection(fault, now_s, [str(fault.service)], []))
            self.say(f"{now_s:6.2f} s  rolling_restart {fault.service}")
        elif fault.kind == "kill_gateway":
            pid = int((await self._status())["gateway"]["pid"])
            self._signal([pid], signal.SIGKILL)
            self.injections.append(Injection(fault, now_s, ["gateway"], [pid]))
            self.say(f"{now_s:6.2f} s  kill_gateway (pid {pid})")
        elif fault.kind == "kill_controller":
            info = read_controller_info(self.workspace) or {}
            pid = int(info.get("pid", 0))
            self._signal([pid], signal.SIGKILL)
            self.controller_down = True
            self.injections.append(Injection(fault, now_s, ["controller"], [pid]))
            self.say(f"{now_s:6.2f} s  kill_controller (pid {pid}); starting it again with lichen up --detach")
            await asyncio.to_thread(self._start_controller)

    def _fault_bodies(self, service: str) -> dict[str, Any]:
        now = time.time()
        return {"faults": [{"kind": f.kind, "percent": f.percent or 100.0, "delay_ms": f.delay_ms or 0.0,
                            "status": f.status or 503, "duration_s": max(0.001, ends - now)}
                           for f, ends in self.traffic.get(service, []) if ends > now]}

    async def _put_faults(self, service: str) -> None:
        await self._api("PUT", f"/v1/services/{service}/faults", json=self._fault_bodies(service), timeout_s=5.0)

    async def _end_traffic_fault(self, fault: FaultSpec) -> None:
        assert fault.service is not None
        self.traffic[fault.service] = [(f, ends) for f, ends in self.traffic.get(fault.service, []) if f is not fault]
        with contextlib.suppress(httpx.HTTPError):
            await self._put_faults(fault.service)
        if not self.traffic[fault.service]:
            del self.traffic[fault.service]
        self.say(f"{time.perf_counter() - self.t0:6.2f} s  {fault.kind} on {fault.service} ended")

    @staticmethod
    def _signal(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _resume(self, pids: list[int]) -> None:
        self._signal(pids, signal.SIGCONT)
        self.paused.difference_update(pids)
        self.say(f"{time.perf_counter() - self.t0:6.2f} s  resumed pid {', '.join(map(str, pids))}")

    def _start_controller(self) -> None:
        done = subprocess.run([*LICHEN, "up", str(self.workspace.app_dir), "--detach"], capture_output=True,
                              text=True, timeout=120)
        if done.returncode == 0:
            self.controller_down = False
        else:
            self.say(f"lichen up --detach failed: {done.stderr.strip()[-500:]}")

    def restore(self) -> None:
        """Undo every fault still in effect: resume stopped processes, start a killed controller."""
        if self.paused:
            pids = sorted(self.paused)
            self._signal(pids, signal.SIGCONT)
            self.paused.clear()
            self.restored.append(f"resumed stopped pid {', '.join(map(str, pids))}")
        if self.controller_down:
            self._start_controller()
            self.restored.append("started the controller again (lichen up --detach)")
        for service in sorted(self.traffic):
            info = read_controller_info(self.workspace) or {}
            try:
                httpx.put(f"{info.get('url')}/v1/services/{service}/faults", json={"faults": []}, timeout=5.0,
                          headers={"Authorization": f"Bearer {read_token(self.workspace)}"}).raise_for_status()
                self.restored.append(f"cleared the traffic faults of {service}")
            except httpx.HTTPError as exc:
                self.restored.append(f"could not clear the traffic faults of {service} ({exc}); they end by "
                                     "themselves when their time is up")
        self.traffic.clear()

    # ------------------------------------------------------------ sampling
    async def _api(self, method: str, path: str, timeout_s: float = 2.0, **kwargs: Any) -> Any:
        """One call to the app's controller, wherever it now listens (a restarted one may have moved)."""
        info = read_controller_info(self.workspace) or {}
        async with httpx.AsyncClient(base_url=str(info.get("url", "http://127.0.0.1:1")), timeout=timeout_s,
                                     headers={"Authorization": f"Bearer {read_token(self.workspace)}"}) as client:
            return (await client.request(method, path, **kwargs)).raise_for_status().json()

    async def _status(self) -> dict[str, Any]:
        return await self._api("GET", "/v1/status")

    async def _sample(self) -> None:
        while True:
            t_s = time.perf_counter() - self.t0
            try:
                ok = at_full_strength(await self._status())
                await self._events()
            except (httpx.HTTPError, OSError, ValueError):
                ok = False
            self.seen.healthy.append((t_s, ok))
            await asyncio.sleep(SAMPLE_S)

    async def _events(self) -> None:
        page = await self._api("GET", "/v1/events", params={"after_id": self.seen.last_event_id, "limit": 1000})
        for event in page:
            self.seen.last_event_id = max(self.seen.last_event_id, int(event["id"]))
            self.seen.events.append((float(event["at"]) - self.t0_wall, event.get("service", ""),
                                     event.get("replica", ""), event.get("kind", "")))

    async def _gateway_retries(self) -> float:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                text = (await client.get(f"{self.gateway_url}/metrics")).text
        except httpx.HTTPError:
            return 0.0
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == "lichen_gateway_retries_total")

    # -------------------------------------------------------------- report
    def _reports_for(self, injection: Injection) -> list[float]:
        targets = set(injection.targets)
        if injection.fault.kind in UNDETECTED:
            return []
        if injection.fault.kind == "kill_gateway":
            return [t for t, service, _, kind in self.seen.events if service == "gateway" and kind != "Ready"]
        if injection.fault.kind == "kill_controller":  # the new controller's first word: it adopted the processes
            return [t for t, ok in self.seen.healthy if ok and t > injection.injected_s]
        return [t for t, _, replica, kind in self.seen.events if replica in targets and kind not in ("Ready", "Started")]

    def _report(self, result: Any, profile: Any, retries: float, orphans: list[int]) -> dict[str, Any]:
        load = summary(result, profile, self.gateway_url, tuple(self.experiment.load.paths()))
        failures = sorted(offset for offset, _, status, kind in (result.log or []) if kind or status >= 500)
        outcomes = []
        starts = sorted(i.injected_s for i in self.injections)
        for injection in self.injections:
            window_end = next((t for t in starts if t > injection.injected_s), math.inf)  # until the next fault
            detected = detected_after(injection.injected_s, self._reports_for(injection))
            recovered = recovered_after(injection.injected_s, self.seen.healthy, failures, detected, window_end)
            end = injection.injected_s + recovered if recovered is not None else window_end
            outcomes.append(FaultOutcome(injection.fault.kind, ", ".join(injection.targets) or "-",
                                         injection.injected_s, detected, recovered,
                                         failed_between(failures, injection.injected_s, end)))
        latency = {name: (load["latency_ms"][name] / 1000 if load["latency_ms"][name] is not None else None)
                   for name in ("p50", "p90", "p99", "p99.9", "max", "mean")}
        verdicts = judge(self.experiment.parsed_hypotheses(), latency, load["error_ratio"], len(failures), outcomes,
                         len(orphans))
        return {"experiment": self.experiment.name, "load": load, "retries": int(retries),
                "retry_amplification": round((load["sent"] + retries) / load["sent"], 4) if load["sent"] else None,
                "faults": [asdict(o) for o in outcomes], "orphans": orphans, "restored": self.restored,
                "hypotheses": verdicts, "held": all(v["held"] for v in verdicts)}

    async def _orphans(self) -> list[int]:
        """App processes alive at the end that the controller does not account for (its own status, read now)."""
        try:
            status = await self._status()
        except (httpx.HTTPError, OSError, ValueError):
            return []  # no controller to ask: nothing can be called an orphan of it; the health samples say so
        known = {int(status.get("pid") or 0), int((status.get("gateway") or {}).get("pid") or 0)}
        known.update(int(r["pid"]) for r in status.get("replicas", []) if r.get("pid"))
        known.update(int(p["pid"]) for p in (status.get("processes") or {}).values() if p.get("pid"))
        marked = await asyncio.to_thread(teardown.marked_processes, self.workspace.app_dir)
        return sorted(pid for pid, _ in marked if pid not in known)
