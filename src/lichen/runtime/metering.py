"""The energy meter under ``lichen up``: sample the node, share its energy over replicas, price it in carbon.

Every ``sustainability.sample_interval_s`` (5 s) :class:`EnergyMeter` reads:

* the node's CPU energy: RAPL (``package`` and ``dram`` zones) where readable,
  else the power model of :mod:`lichen.control.energy_accounting` at the
  machine's CPU utilisation, with the TDP from ``cpu_tdp_w``, codecarbon's
  table, or its per-thread fallback; memory is modelled per resident GB;
* each replica's CPU seconds (its process and children) and resident memory, which it also exports per
  replica for ``lichen advise`` (:mod:`lichen.runtime.replica_usage`; sampled even while
  ``sustainability.enabled`` is false);
* each GPU through NVML (energy counter, else power), with per-process SM
  utilisation; a GPU replica NVML cannot read is modelled from ``gpu_tdp_w``;
* the gateway's requests per service and revision (for the SCI gauge);
* the carbon intensity from :class:`lichen.green.intensity_sources.IntensityChain`.

It asks the pure :func:`~lichen.control.energy_accounting.account_interval`
for the shares and adds them to counters on the controller's registry, which
the embedded Prometheus scrapes (``job="controller"``): ``lichen energy`` and
the dashboard read them there. A source that fails degrades to the next with
an event (``EnergySourceFallback``); nothing here raises into the controller
loop. The meter's own CPU time is counted
(``lichen_energy_accounting_cpu_seconds_total``) beside the controller's
(``process_cpu_seconds_total``).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from lichen.clocks import Clock
from lichen.control import energy_accounting as ea
from lichen.green import rapl, reference_tables
from lichen.green.intensity_sources import IntensityChain
from lichen.green.nvml import GpuReading, GpuSource, NvmlReader, NvmlUnavailable, gpu_energy_j
from lichen.logs import get_logger
from lichen.runtime.endpoints import Ingress, gateway_exposition
from lichen.runtime.host_readings import CpuModel, Host, ProcessUsage, PsutilHost, gateway_requests
from lichen.runtime.replica_usage import ReplicaUsageCollector, UsageReading
from lichen.runtime.replicas import Replica
from lichen.runtime.workspaces import gpu_device_list
from lichen.spec.models import SustainabilitySpec

log = get_logger("lichen.controller")
GB = 1024 ** 3
SCI_WINDOW_S = 300.0
"""the SCI gauge's window: carbon and requests over the last five minutes"""
FORGET_AFTER_S = 120.0
"""a gone replica's series stay this long, so the last scrape sees its final count"""
READ_TIMEOUT_S = 1.0
SECONDS_PER_YEAR = 365.25 * 86400
__all__ = ["CpuModel", "EnergyMeter", "Host", "ProcessUsage", "PsutilHost", "attach_energy_meter", "gateway_requests"]


class MeteredController(Protocol):
    clock: Clock
    replicas: dict[str, Replica]
    gateway: Ingress | None
    metrics: CollectorRegistry

    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...

    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None: ...


class _Instruments:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["service", "revision", "replica", "source"]

        def triple(name: str, doc: str, names: list[str]) -> tuple[Counter, Counter, Counter]:
            return (Counter(name, doc, names, registry=registry),
                    Counter(f"{name}_low", f"{doc} Low end of the band.", names, registry=registry),
                    Counter(f"{name}_high", f"{doc} High end of the band.", names, registry=registry))

        self.energy = triple("lichen_energy_joules", "Energy attributed to a replica, by source.", labels)
        self.carbon = triple("lichen_carbon_grams", "Operational carbon (gCO2e) of a replica's energy, x PUE, by "
                             "energy source and intensity source.", [*labels, "intensity"])
        self.embodied = Counter("lichen_embodied_carbon_grams", "Embodied carbon (the SCI's M) shared to a replica.",
                                ["service", "revision", "replica"], registry=registry)
        self.idle = triple("lichen_energy_idle_joules", "Node energy with nothing running, reported apart.",
                           ["source"])
        self.unattributed = triple("lichen_energy_unattributed_joules",
                                   "Active node energy of processes that are not replicas.", ["source"])
        self.power = Gauge("lichen_node_power_watts", "Node power over the last sample, by source.", ["source"],
                           registry=registry)
        self.intensity = Gauge("lichen_carbon_intensity_g_per_kwh", "Grid carbon intensity in use.", ["source"],
                               registry=registry)
        self.sci = Gauge("lichen_sci_grams_per_1000_requests", "Software Carbon Intensity, (E*I+M)/R per 1000 "
                         "requests, over the last 5 minutes.", ["service", "revision"], registry=registry)
        self.cost = Counter("lichen_energy_accounting_cpu_seconds", "CPU time the energy meter itself used.",
                            registry=registry)


class EnergyMeter:
    """See the module docs. ``tick`` is the periodic task; ``status`` what ``lichen energy`` adds."""

    def __init__(self, controller: MeteredController, spec: SustainabilitySpec, app_dir: Path, *,
                 host: Host | None = None, rapl_root: Path = rapl.POWERCAP,
                 gpus: Callable[[], GpuSource] | None = NvmlReader, intensity: IntensityChain | None = None,
                 read_gateway: Callable[[], Any] | None = None) -> None:
        self.controller = controller
        self.app_dir = app_dir
        self.host = host or PsutilHost()
        self.rapl_root = rapl_root
        self.instruments = _Instruments(controller.metrics)
        self.usage = ReplicaUsageCollector()
        controller.metrics.register(self.usage)
        self.read_gateway = read_gateway or self._read_gateway
        self.client = httpx.AsyncClient(timeout=READ_TIMEOUT_S)
        self.intensity = intensity or IntensityChain(spec, app_dir, announce=self._announce)
        self._configure(spec)
        zones, problems = rapl.read_zones(rapl_root)
        # package zones and their dram sub-zones: core/uncore are inside the package, and psys (client
        # machines) measures the whole platform, package included
        self.rapl_zones = {z.zone: z for z in zones
                           if z.zone.startswith("package") and ("/" not in z.zone or z.zone.endswith("/dram"))}
        self.node_source = "rapl" if self.rapl_zones else "model"
        self.problems: dict[str, str] = {}
        if not self.rapl_zones:
            self.problems["rapl"] = "; ".join(problems) or "no RAPL zone"
        self.gpu: GpuSource | None = None
        self.gpu_readings: dict[int, GpuReading] = {}
        if gpus is not None:
            try:
                self.gpu = gpus()
                self.gpu_readings = {g.index: g for g in self.gpu.read()}
            except NvmlUnavailable as exc:
                self.problems["nvml"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a driver that fails past its init degrades the same way
                self.gpu = None
                self.problems["nvml"] = f"NVML: {type(exc).__name__}: {exc}"
        self.gpu_missing_announced = False
        self.last_s: float | None = None
        self.last_cpu: tuple[float, float] | None = None
        self.last_process: dict[str, tuple[int, float]] = {}  # replica -> (pid, CPU seconds) at the last sample
        self.idle_probe: tuple[float, float] | None = None  # RAPL: (power, utilisation) of the quietest sample
        self.requests_raw: dict[tuple[str, str], float] = {}
        self.gateway_seen = False
        self.requests: dict[tuple[str, str], float] = {}
        self.carbon_sum: dict[tuple[str, str], float] = {}
        self.history: deque[tuple[float, dict[tuple[str, str], float], dict[tuple[str, str], float]]] = deque()
        self.gone: dict[tuple[str, str, str], float] = {}
        self.series: set[tuple[str, str, str, str]] = set()
        self.carbon_labels: set[tuple[str, str, str, str, str]] = set()
        self.last_power: ea.Estimate | None = None
        self.last_intensity: ea.Estimate | None = None
        fallback = f"modelling CPU power from {self.cpu.source}" if not self.rapl_zones else ""
        if fallback:
            self._announce("EnergySourceFallback", f"RAPL unreadable ({self.problems['rapl']}); {fallback}")

    def _configure(self, spec: SustainabilitySpec) -> None:
        """Take ``spec`` (at start, and when ``lichen up`` applies a changed section)."""
        self.spec = spec
        model = self.host.cpu_model()
        self.logical_cpus = model.logical_cpus
        fallback = reference_tables.CpuPower(
            reference_tables.DEFAULT_W_PER_THREAD * model.logical_cpus,
            f"codecarbon fallback: {reference_tables.DEFAULT_W_PER_THREAD:g} W × {model.logical_cpus} logical CPUs",
            False)
        if spec.cpu_tdp_w is not None:
            self.cpu = reference_tables.CpuPower(spec.cpu_tdp_w, "sustainability.cpu_tdp_w", True)
        else:
            try:
                self.cpu = reference_tables.cpu_power(model.name, model.logical_cpus, model.sockets)
            except reference_tables.TableError as exc:
                self.cpu = fallback
                self._announce("EnergySourceFallback", f"{exc}; {fallback.source}")
            if model.virtual and self.cpu.known:  # the table's TDP is the host's whole package, not this slice
                self.cpu = reference_tables.CpuPower(
                    fallback.tdp_w, f"{fallback.source} (a VM: {self.cpu.source} is the host's whole package; set "
                    "sustainability.cpu_tdp_w to this VM's share)", False)
        self.cpu_range = ea.FULL_LOAD_RANGE if self.cpu.known else ea.UNKNOWN_CPU_RANGE

    async def _follow_spec(self) -> None:
        app_spec = getattr(self.controller, "app_spec", None)
        if app_spec is None or app_spec.sustainability == self.spec:
            return
        new = app_spec.sustainability
        intensity_changed = new.model_dump(exclude={"cpu_tdp_w", "gpu_tdp_w", "pue", "embodied_kg_co2e",
                                                    "lifespan_years", "sample_interval_s", "enabled"}) != \
            self.spec.model_dump(exclude={"cpu_tdp_w", "gpu_tdp_w", "pue", "embodied_kg_co2e", "lifespan_years",
                                          "sample_interval_s", "enabled"})
        if intensity_changed:
            old = self.intensity
            self.intensity = IntensityChain(new, self.app_dir, announce=self._announce)
            await old.aclose()
        self._configure(new)
        self._announce("EnergySettingsApplied", "sustainability changed: new settings apply from this sample")

    def _announce(self, reason: str, message: str) -> None:
        self.controller.event("", "EnergySource", reason, message)

    async def _read_gateway(self) -> str | None:
        return await gateway_exposition(self.client, self.controller.gateway)

    async def tick(self) -> None:
        """One sample (see the module docs); the first only takes baselines."""
        try:
            await self._tick()
        except Exception as exc:  # noqa: BLE001 - accounting must never take the controller down
            log.warning("energy_sample_failed", error=f"{type(exc).__name__}: {exc}")

    async def _tick(self) -> None:
        await self._follow_spec()
        if not self.spec.enabled:
            self.last_s = self.last_cpu = None  # sampling resumes with a fresh baseline
            self._read_replicas()  # lichen advise's usage still counts
            return
        exposition = await self.read_gateway()
        intensity = await self.intensity.current(self.controller.clock.wall())
        started = time.thread_time()
        now = self.controller.clock.now()
        self._sample(now, intensity, exposition)
        self.instruments.cost.inc(max(0.0, time.thread_time() - started))

    def _sample(self, now: float, intensity: ea.Estimate, exposition: str | None) -> None:
        cpu_now = self.host.cpu_times()
        usages, fresh, pid_replica = self._usages(now)
        gpu_now = self._read_gpus()
        if self.last_s is None or self.last_cpu is None:
            self.last_s, self.last_cpu = now, cpu_now
            self.gpu_readings.update({g.index: g for g in gpu_now})
            if self.rapl_zones:  # the counters' baseline is now too, not when the meter was built
                zones, _ = rapl.read_zones(self.rapl_root)
                self.rapl_zones.update({z.zone: z for z in zones if z.zone in self.rapl_zones})
            self._count_requests(exposition, now)
            return
        dt = now - self.last_s
        busy_s = max(0.0, cpu_now[0] - self.last_cpu[0])
        total_s = max(1e-9, cpu_now[1] - self.last_cpu[1])
        self.last_s, self.last_cpu = now, cpu_now
        if dt <= 0:
            return
        node_j, idle_j, active_j, memory_per_gb = self._node(dt, busy_s / total_s)
        gpus = self._gpu_intervals(gpu_now, usages, pid_replica, dt)
        account = ea.account_interval(usages, cpu_j=node_j, cpu_idle_j=idle_j, busy_cpu_s=busy_s,
                                      cpu_active_j=active_j, memory_j_per_gb=memory_per_gb, gpus=gpus)
        idle = account.idle
        if memory_per_gb is not None:  # RAM no replica holds is part of the node's idle draw
            replica_gb = sum(u.rss_gb for u in usages)
            idle = idle + memory_per_gb.scaled(max(0.0, self.host.memory_total_bytes() / GB - replica_gb))
        self._count(account, idle, usages, intensity, dt)
        self.last_power = (node_j + (memory_per_gb.scaled(self.host.memory_total_bytes() / GB)
                                     if memory_per_gb is not None else ea.Estimate.measured(0.0, node_j.source))
                           ).scaled(1.0 / dt)
        self.instruments.power.clear()
        self.instruments.power.labels(self.last_power.source).set(self.last_power.value)
        self.last_intensity = intensity
        self.instruments.intensity.clear()
        self.instruments.intensity.labels(intensity.source).set(intensity.value)
        self._count_requests(exposition, now)
        self._forget_gone(now, fresh)

    def _node(self, dt: float, utilisation: float) -> tuple[ea.Estimate, ea.Estimate, ea.Estimate | None,
                                                             ea.Estimate | None]:
        """The node's CPU energy, its idle part, the active part where modelled, and memory J per GB."""
        if self.rapl_zones:
            zones, problems = rapl.read_zones(self.rapl_root)
            fresh = {z.zone: z for z in zones if z.zone in self.rapl_zones}
            if len(fresh) == len(self.rapl_zones):
                joules = sum(rapl.energy_delta_j(self.rapl_zones[k], fresh[k]) for k in fresh)
                self.rapl_zones = fresh
                power_w = joules / dt
                if self.idle_probe is None or power_w < self.idle_probe[0]:
                    self.idle_probe = (power_w, utilisation)  # the quietest sample: the least extrapolation
                idle_w = ea.idle_power_from(*self.idle_probe)
                idle = ea.Estimate(min(idle_w.value, power_w), min(idle_w.low, power_w), min(idle_w.high, power_w),
                                   "rapl")
                return ea.Estimate.measured(joules, "rapl"), idle.scaled(dt), None, None
            self.rapl_zones = {}
            self.problems["rapl"] = "; ".join(problems) or "a zone vanished"
            self._announce("EnergySourceFallback", f"RAPL stopped answering ({self.problems['rapl']}); "
                                                   f"modelling CPU power from {self.cpu.source}")
        tdp = self.cpu.tdp_w
        return (ea.modelled_cpu_power(tdp, utilisation, self.cpu_range).scaled(dt),
                ea.modelled_idle_power(tdp, self.cpu_range).scaled(dt),
                ea.modelled_active_power(tdp, utilisation, self.cpu_range).scaled(dt),
                ea.modelled_memory_power(1.0).scaled(dt))

    def _read_replicas(self) -> list[tuple[Any, ProcessUsage]]:
        """Every live replica's record and process reading, exported for ``lichen advise`` too."""
        begin = getattr(self.host, "begin_sample", None)
        if begin is not None:
            begin()
        found = []
        for replica in list(self.controller.replicas.values()):
            record = replica.record
            usage = self.host.process(record.pid) if record.pid else None
            if usage is not None:
                found.append((record, usage))
        self.usage.update({(r.service, r.revision, r.id): UsageReading(u.cpu_s, u.rss_bytes, u.data_bytes)
                           for r, u in found})
        return found

    def _usages(self, now: float) -> tuple[list[ea.ReplicaUsage], set[str], dict[int, str]]:
        """Each live replica's use since the last sample, the ids seen, and every PID (with children) -> replica."""
        usages, seen, pid_replica = [], set(), {}
        wall_then = self.controller.clock.wall() - (now - self.last_s) if self.last_s is not None else None
        for record, usage in self._read_replicas():
            seen.add(record.id)
            pid_replica.update({pid: record.id for pid in usage.pids or (record.pid,)})
            last = self.last_process.get(record.id)
            if last is not None and last[0] == record.pid:
                before = last[1]
            else:  # a new process (a new replica, or a restart under the same id): all its CPU is in the
                # interval when it started since the last sample; a process already running (adopted): a baseline
                before = 0.0 if wall_then is not None and usage.started_wall_s >= wall_then else usage.cpu_s
            self.last_process[record.id] = (record.pid or 0, usage.cpu_s)
            reserved = record.placement.get("cpu_cores")
            usages.append(ea.ReplicaUsage(record.id, record.service, record.revision, max(0.0, usage.cpu_s - before),
                                          usage.rss_bytes / GB, self._gpu_indices(record.placement),
                                          float(reserved) if reserved else None))
        for gone in set(self.last_process) - seen:
            del self.last_process[gone]
        return usages, seen, pid_replica

    def _gpu_indices(self, placement: dict[str, Any]) -> tuple[int, ...]:
        """The NVML indices of a replica's GPUs: its ``CUDA_VISIBLE_DEVICES`` names, a ``GPU-`` UUID matched to
        the device NVML reports with it, an index as NVML's index."""
        granted = tuple(placement.get("gpu_indices", ()))
        if not granted:
            return ()
        by_uuid = {g.uuid: g.index for g in self.gpu_readings.values()}
        indices = []
        for name in gpu_device_list(granted).split(","):
            name = name.strip()
            if name.isdigit():
                indices.append(int(name))
            elif name in by_uuid:
                indices.append(by_uuid[name])
        return tuple(indices)

    def _read_gpus(self) -> list[GpuReading]:
        if self.gpu is None:
            return []
        try:
            return self.gpu.read()
        except Exception as exc:  # noqa: BLE001 - a driver error degrades, never crashes
            self.problems["nvml"] = f"NVML read failed: {exc}"
            with contextlib.suppress(Exception):
                self.gpu.close()
            self._announce("EnergySourceFallback", f"{self.problems['nvml']}; GPU energy is modelled from "
                                                   "gpu_tdp_w where set, else not counted")
            self.gpu = None
            return []

    def _gpu_intervals(self, readings: list[GpuReading], usages: list[ea.ReplicaUsage], pid_replica: dict[int, str],
                       dt: float) -> dict[int, ea.GpuInterval]:
        intervals: dict[int, ea.GpuInterval] = {}
        for reading in readings:
            before = self.gpu_readings.get(reading.index)
            self.gpu_readings[reading.index] = reading
            if before is None:
                continue
            joules, low, high, source = gpu_energy_j(before, reading, dt)
            utilisation: dict[str, float] = {}
            for pid, share in reading.utilisation_by_pid.items():
                if pid in pid_replica:
                    utilisation[pid_replica[pid]] = utilisation.get(pid_replica[pid], 0.0) + share
            intervals[reading.index] = ea.GpuInterval(ea.Estimate(joules, low, high, source), utilisation)
        held = sorted({i for u in usages for i in u.gpu_indices} - set(intervals))
        if held and not self.gpu_missing_announced and self.gpu is None:
            self.gpu_missing_announced = True
            what = (f"modelling them from gpu_tdp_w ({self.spec.gpu_tdp_w:g} W)" if self.spec.gpu_tdp_w
                    else "their energy is not counted (set sustainability.gpu_tdp_w to model it)")
            self._announce("EnergySourceFallback", f"replicas hold GPUs {held} but NVML cannot read them "
                           f"({self.problems.get('nvml', 'no NVML')}); {what}")
        if self.spec.gpu_tdp_w is not None:
            tdp = self.spec.gpu_tdp_w
            for index in held:  # a held GPU NVML gave no reading for
                intervals[index] = ea.GpuInterval(ea.Estimate(0.65 * tdp * dt, 0.2 * tdp * dt, tdp * dt, "model-gpu"))
        return intervals

    def _count(self, account: ea.IntervalAccount, idle: ea.Estimate, usages: list[ea.ReplicaUsage],
               intensity: ea.Estimate, dt: float) -> None:
        owners = {u.replica: u for u in usages}
        pue = self.spec.pue
        for (replica, source), joules in account.by_replica.items():
            usage = owners[replica]
            labels = (usage.service, usage.revision, replica, source)
            self.series.add(labels)
            grams = ea.carbon_g(joules, intensity, pue)
            for counters, estimate, names in ((self.instruments.energy, joules, labels),
                                              (self.instruments.carbon, grams, (*labels, intensity.source))):
                for counter, amount in zip(counters, (estimate.value, estimate.low, estimate.high), strict=True):
                    counter.labels(*names).inc(max(0.0, amount))
            self.carbon_labels.add((*labels, intensity.source))
            key = (usage.service, usage.revision)
            self.carbon_sum[key] = self.carbon_sum.get(key, 0.0) + grams.value
        if self.spec.embodied_kg_co2e:
            per_s = self.spec.embodied_kg_co2e * 1000.0 / (self.spec.lifespan_years * SECONDS_PER_YEAR)
            capacity_s = dt * self.logical_cpus
            for usage in usages:  # its share of the machine: the cores reserved for it, else its CPU time
                share = usage.reserved_cpus / self.logical_cpus if usage.reserved_cpus else usage.cpu_s / capacity_s
                grams = per_s * dt * min(1.0, share)
                self.instruments.embodied.labels(usage.service, usage.revision, usage.replica).inc(grams)
                key = (usage.service, usage.revision)
                self.carbon_sum[key] = self.carbon_sum.get(key, 0.0) + grams
        extra = [(self.instruments.idle, idle), (self.instruments.unattributed, account.unattributed)]
        if account.gpu_unattributed is not None:
            extra.append((self.instruments.unattributed, account.gpu_unattributed))
        for counters, estimate in extra:
            for counter, amount in zip(counters, (estimate.value, estimate.low, estimate.high), strict=True):
                counter.labels(estimate.source).inc(max(0.0, amount))

    def _count_requests(self, exposition: str | None, now: float) -> None:
        if exposition is not None:
            for key, raw in gateway_requests(exposition).items():
                last = self.requests_raw.get(key)
                delta = raw if last is None or raw < last else raw - last  # a restarted gateway counts from 0
                self.requests_raw[key] = raw
                if last is not None or raw == 0 or self.gateway_seen:
                    self.requests[key] = self.requests.get(key, 0.0) + delta
                else:
                    self.requests.setdefault(key, 0.0)  # counted before the meter's first look: a baseline
            self.gateway_seen = True  # from now on a new revision's first count is all its own
        self.history.append((now, dict(self.carbon_sum), dict(self.requests)))
        while self.history and self.history[0][0] < now - SCI_WINDOW_S:
            self.history.popleft()
        self.instruments.sci.clear()
        then, carbon_then, requests_then = self.history[0]
        if now - then <= 0:
            return
        for key, carbon in self.carbon_sum.items():
            served = self.requests.get(key, 0.0) - requests_then.get(key, 0.0)
            if served > 0:
                self.instruments.sci.labels(*key).set((carbon - carbon_then.get(key, 0.0)) / served * 1000.0)

    def _forget_gone(self, now: float, live: set[str]) -> None:
        for labels in list(self.series):
            service, revision, replica, _ = labels
            if replica in live:
                self.gone.pop((service, revision, replica), None)
                continue
            since = self.gone.setdefault((service, revision, replica), now)
            if now - since >= FORGET_AFTER_S:
                self.series.discard(labels)
                for counter in self.instruments.energy:
                    with contextlib.suppress(KeyError):
                        counter.remove(*labels)
                for carbon_labels in [c for c in self.carbon_labels if c[:4] == labels]:
                    self.carbon_labels.discard(carbon_labels)
                    for counter in self.instruments.carbon:
                        with contextlib.suppress(KeyError):
                            counter.remove(*carbon_labels)
                with contextlib.suppress(KeyError):
                    self.instruments.embodied.remove(service, revision, replica)
                self.last_process.pop(replica, None)
                self.gone.pop((service, revision, replica), None)

    def status(self) -> dict[str, Any]:
        """The node's sources and their standing problems, for ``lichen energy``."""
        return {"node_source": "rapl" if self.rapl_zones else "model",
                "cpu": {"tdp_w": self.cpu.tdp_w, "source": self.cpu.source, "band": list(self.cpu_range)},
                "gpu_source": "nvml" if self.gpu is not None else ("model-gpu" if self.spec.gpu_tdp_w else None),
                "problems": dict(self.problems), "pue": self.spec.pue,
                "sample_interval_s": self.spec.sample_interval_s,
                "power_w": _plain(self.last_power), "intensity_g_per_kwh": _plain(self.last_intensity),
                "intensity_sources": self.intensity.describe()["chain"]}

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.intensity.aclose()
        if self.gpu is not None:
            self.gpu.close()


def _plain(estimate: ea.Estimate | None) -> dict[str, Any] | None:
    if estimate is None:
        return None
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high, "source": estimate.source}


def attach_energy_meter(controller: MeteredController, spec: SustainabilitySpec, app_dir: Path,
                        **seams: Any) -> EnergyMeter | None:
    """Run the meter as one of the controller's periodic tasks (it samples only while
    ``sustainability.enabled``; the interval is the one at start); None, with an event, when it cannot start."""
    try:
        meter = EnergyMeter(controller, spec, app_dir, **seams)
    except Exception as exc:  # noqa: BLE001 - accounting must never keep the app from starting
        log.exception("energy_meter_failed")
        controller.event("", "EnergySource", "EnergyAccountingOff", f"the energy meter could not start: "
                         f"{type(exc).__name__}: {exc}; lichen energy reports nothing until the next start")
        return None
    controller.add_periodic("energy meter", spec.sample_interval_s, meter.tick)
    return meter
