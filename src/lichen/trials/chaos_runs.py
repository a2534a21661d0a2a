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
  carry on meanwhile and the new controller must adopt every process;
* ``latency``, ``errors``, ``reset``, ``bandwidth``: in one service's traffic at the gateway
  (``PUT /v1/services/{svc}/faults``), each with its end time;
* ``pause_dependency``: ``SIGSTOP`` of the process listening on a TCP port
  (Redis for a cache), ``SIGCONT`` after ``for_s``; only the current user's
  processes, never Lichen's own (:mod:`lichen.control.dependency_faults`);
* ``slow_disk``, ``full_disk``: every write of the controller's state store
  waits ``delay_ms`` first, or fails with ENOSPC and is rolled back
  (``PUT /v1/state/faults``, with its end time; nothing fills the real
  disk); the controller must keep the data plane serving, retry the writes
  and catch up once the fault lifts (``GET /v1/state``);
* ``receiver_down``: the controller's deliveries to one alert receiver fail
  as a refused connection would (``PUT /v1/receivers/{name}/faults``, with
  its end time); the outbox must retry them. With it, or with a
  ``no notification lost`` hypothesis, the run reads the controller's outbox
  (``GET /v1/notifications``) and, after the load, waits for it to drain,
  for at most the notifier's longest retry back-off plus an evaluation
  interval plus 5 s: a notification created during the run and not
  delivered by then is counted lost.

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
                                           notification_tally, outbox_drained, recovered_after)
from lichen.control.dependency_faults import Refused, dependency_pids, describe
from lichen.control.load_profiles import arrival_offsets, shaped
from lichen.runtime import teardown
from lichen.runtime.workspaces import Workspace, read_controller_info, read_token
from lichen.spec.experiments import DISK_FAULTS, TRAFFIC_FAULTS, UNDETECTED, ExperimentSpec, FaultSpec
from lichen.spec.models import AppSpec
from lichen.trials.chaos_dependencies import listeners_on
from lichen.trials.load_generation import LoadEngine, build_target
from lichen.trials.load_reports import summary

SAMPLE_S = 0.1
DRAIN_MARGIN_S = 5.0
"""beyond the notifier's longest back-off and one evaluation interval, how long a run waits for its outbox"""
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


@dataclass
class Injection:
    fault: FaultSpec
    injected_s: float
    targets: list[str]
    pids: list[int]
    note: str = ""
    ended_s: float | None = None
    """when a fault that lasts was undone (a paused dependency resumed), from the start of the load"""


@dataclass
class Observations:
    """What the sampler saw: ``(t_s, healthy)`` and events as ``(t_s, service, replica, kind)``."""

    healthy: list[tuple[float, bool]] = field(default_factory=list)
    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    last_event_id: int = 0
    outbox: list[tuple[float, dict[str, bool]]] = field(default_factory=list)
    store: list[tuple[float, bool]] = field(default_factory=list)
    """no disk fault live and no state write waiting (when the run has disk faults)"""
    """per sample, each receiver's state: True when it is not held down and has nothing pending from the run"""


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
        self.receivers_down: set[str] = set()
        self.disk: list[tuple[FaultSpec, float]] = []
        """live disk faults under the state store, each with the wall time it ends"""
        self.watch_store = any(f.kind in DISK_FAULTS for f in experiment.faults)
        self.store_health: dict[str, Any] | None = None
        self.controller_down = False
        self.watch_outbox = any(f.kind == "receiver_down" for f in experiment.faults) or any(
            h.measure == "notifications_lost" for h in experiment.parsed_hypotheses())
        """read the controller's notification outbox: a receiver is held down, or a hypothesis counts losses"""
        self.notifications: dict[str, Any] | None = None
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
            if self.watch_outbox:
                self.notifications = await self._drain_outbox()
            if self.watch_store:
                with contextlib.suppress(httpx.HTTPError):
                    self.store_health = await self._api("GET", "/v1/state")
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
        while time.perf_counter() < deadline and not (self.seen.healthy and self.seen.healthy[-1][1] and (
                not self.watch_store or (self.seen.store and self.seen.store[-1][1]))):  # and no write waiting
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
                    f"{fault.status or 503} answers" if fault.kind == "errors" else
                    f"answers paced to {fault.rate_kbps:g} kbit/s" if fault.kind == "bandwidth" else
                    "connection resets")
            self.say(f"{now_s:6.2f} s  {fault.kind} on {fault.service}: {what} for {fault.percent or 100:g} % of "
                     f"requests, {fault.for_s:g} s")
        elif fault.kind in DISK_FAULTS:
            assert fault.for_s is not None
            self.disk.append((fault, time.time() + fault.for_s))
            await self._put_disk_faults()
            asyncio.get_running_loop().call_later(fault.for_s, lambda: asyncio.ensure_future(
                self._end_disk_fault(fault)))
            self.injections.append(Injection(fault, now_s, ["state store"], []))
            what = (f"each write {fault.delay_ms:g} ms slower" if fault.kind == "slow_disk" else
                    "each write fails (ENOSPC)")
            self.say(f"{now_s:6.2f} s  {fault.kind} under the state store: {what} for {fault.for_s:g} s")
        elif fault.kind == "receiver_down":
            assert fault.receiver is not None and fault.for_s is not None
            self.receivers_down.add(fault.receiver)
            await self._api("PUT", f"/v1/receivers/{fault.receiver}/faults",
                            json={"faults": [{"kind": "down", "duration_s": fault.for_s}]}, timeout_s=5.0)
            asyncio.get_running_loop().call_later(fault.for_s, lambda: asyncio.ensure_future(
                self._end_receiver_fault(fault.receiver or "")))
            self.injections.append(Injection(fault, now_s, [fault.receiver], []))
            self.say(f"{now_s:6.2f} s  receiver_down {fault.receiver}: its deliveries refused for {fault.for_s:g} s")
        elif fault.kind == "pause_dependency":
            assert fault.port is not None and fault.for_s is not None
            listeners = await asyncio.to_thread(listeners_on, fault.port, self.workspace.app_dir)
            try:
                pids = dependency_pids(fault.port, listeners, os.getuid())
            except Refused as exc:  # it was there when the experiment was checked; not any more
                self.injections.append(Injection(fault, now_s, [], [], str(exc)))
                self.say(f"{now_s:6.2f} s  pause_dependency: {exc}")
                return
            self._signal(pids, signal.SIGSTOP)
            self.paused.update(pids)
            injection = Injection(fault, now_s, [describe(fault.port, listeners)], pids)
            self.injections.append(injection)
            asyncio.get_running_loop().call_later(fault.for_s, self._resume, pids, injection)
            self.say(f"{now_s:6.2f} s  pause_dependency {injection.targets[0]} (pid {', '.join(map(str, pids))}) "
                     f"for {fault.for_s:g} s")
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
                            "status": f.status or 503, "rate_kbps": f.rate_kbps or 0.0,
                            "duration_s": max(0.001, ends - now)}
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

    async def _put_disk_faults(self) -> None:
        now = time.time()
        await self._api("PUT", "/v1/state/faults", timeout_s=5.0, json={"faults": [
            {"kind": "slow" if f.kind == "slow_disk" else "full", "delay_ms": f.delay_ms or 0.0,
             "duration_s": max(0.001, ends - now)} for f, ends in self.disk if ends > now]})

    async def _end_disk_fault(self, fault: FaultSpec) -> None:
        self.disk = [(f, ends) for f, ends in self.disk if f is not fault]
        with contextlib.suppress(httpx.HTTPError):
            await self._put_disk_faults()
        self.say(f"{time.perf_counter() - self.t0:6.2f} s  {fault.kind} ended")

    async def _end_receiver_fault(self, receiver: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self._api("PUT", f"/v1/receivers/{receiver}/faults", json={"faults": []}, timeout_s=5.0)
            self.receivers_down.discard(receiver)
        self.say(f"{time.perf_counter() - self.t0:6.2f} s  receiver_down {receiver} ended")

    @staticmethod
    def _signal(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _resume(self, pids: list[int], injection: Injection | None = None) -> None:
        self._signal(pids, signal.SIGCONT)
        if injection is not None:
            injection.ended_s = time.perf_counter() - self.t0
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
            self._clear(f"/v1/services/{service}/faults", f"the traffic faults of {service}")
        self.traffic.clear()
        if self.disk:
            self._clear("/v1/state/faults", "the state store's disk faults")
            self.disk.clear()
        for receiver in sorted(self.receivers_down):
            self._clear(f"/v1/receivers/{receiver}/faults", f"receiver_down of {receiver}")
        self.receivers_down.clear()

    def _clear(self, path: str, what: str) -> None:
        """Clear faults set through the control API (synchronous: this runs on the way out, maybe without a loop)."""
        info = read_controller_info(self.workspace) or {}
        try:
            httpx.put(f"{info.get('url')}{path}", json={"faults": []}, timeout=5.0,
                      headers={"Authorization": f"Bearer {read_token(self.workspace)}"}).raise_for_status()
            self.restored.append(f"cleared {what}")
        except httpx.HTTPError as exc:
            self.restored.append(f"could not clear {what} ({exc}); it ends by itself when its time is up")

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
            if self.watch_store:
                try:
                    store = await self._api("GET", "/v1/state")
                    # stamped when the answer came: a slow disk holds the controller's loop, so an answer can
                    # describe a moment well after the request left
                    self.seen.store.append((time.perf_counter() - self.t0,
                                            not store["pending_writes"] and not store["faults"]))
                except (httpx.HTTPError, OSError, ValueError):
                    self.seen.store.append((time.perf_counter() - self.t0, False))
            if self.watch_outbox:
                with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
                    drained = outbox_drained(await self._outbox())
                    self.seen.outbox.append((time.perf_counter() - self.t0, drained))
            await asyncio.sleep(SAMPLE_S)

    async def _outbox(self) -> dict[str, Any]:
        """The controller's notifications created since the load started (``GET /v1/notifications``)."""
        return await self._api("GET", "/v1/notifications", params={"since": self.t0_wall, "limit": 10000})

    async def _drain_outbox(self) -> dict[str, Any]:
        """Wait for every notification of the run to be delivered (or given up), for at most the notifier's longest
        back-off plus one evaluation interval plus :data:`DRAIN_MARGIN_S`; then count them."""
        started = time.perf_counter()
        try:
            outbox = await self._outbox()
        except httpx.HTTPError as exc:
            detail = exc.response.text[:200] if isinstance(exc, httpx.HTTPStatusError) else str(exc)
            return {"error": f"the controller's outbox could not be read: {detail}"}
        bound_s = float(outbox["retry_max_s"]) + float(outbox["evaluation_interval_s"]) + DRAIN_MARGIN_S
        while not all(outbox_drained(outbox).values()) and time.perf_counter() - started < bound_s:
            await asyncio.sleep(SAMPLE_S * 2)
            with contextlib.suppress(httpx.HTTPError):
                outbox = await self._outbox()
        return {**notification_tally(outbox["notifications"]),
                "drain_waited_s": round(time.perf_counter() - started, 2), "drain_bound_s": bound_s}

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
            health, late = self.seen.healthy, failures
            if injection.fault.kind in ("receiver_down", *DISK_FAULTS):
                # judged on its own signal, also while other faults strike: the outbox drained after the fault, or
                # no state write waits for the disk any more
                health = ([(t, states.get(injection.targets[0], False)) for t, states in self.seen.outbox]
                          if injection.fault.kind == "receiver_down" else self.seen.store)
                window_end, late = math.inf, []
            elif injection.fault.kind == "pause_dependency":  # not before the dependency runs again
                ended = injection.ended_s if injection.ended_s is not None else math.inf
                health = [(t, ok and t >= ended) for t, ok in health]
            recovered = recovered_after(injection.injected_s, health, late, detected, window_end)
            end = injection.injected_s + recovered if recovered is not None else window_end
            outcomes.append(FaultOutcome(injection.fault.kind, ", ".join(injection.targets) or "-",
                                         injection.injected_s, detected, recovered,
                                         failed_between(failures, injection.injected_s, end)))
        latency = {name: (load["latency_ms"][name] / 1000 if load["latency_ms"][name] is not None else None)
                   for name in ("p50", "p90", "p99", "p99.9", "max", "mean")}
        notes = self.notifications
        verdicts = judge(self.experiment.parsed_hypotheses(), latency, load["error_ratio"], len(failures), outcomes,
                         len(orphans), notifications_lost=notes.get("lost") if notes else None)
        return {"experiment": self.experiment.name, "started_wall": round(self.t0_wall, 3), "load": load,
                "retries": int(retries),
                "retry_amplification": round((load["sent"] + retries) / load["sent"], 4) if load["sent"] else None,
                "faults": [asdict(o) for o in outcomes], "orphans": orphans, "restored": self.restored,
                **({"notifications": notes} if notes is not None else {}),
                **({"state_store": self.store_health} if self.store_health is not None else {}),
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
