"""The energy meter under ``lichen up`` (lichen.runtime.metering) on twins: a fake clock, host, powercap tree,
GPU source, gateway and intensity. Expected figures come from lichen.control.energy_accounting's own model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from lichen.control import energy_accounting as ea
from lichen.gateway.metrics import GatewayMetrics
from lichen.green.nvml import GpuReading, NvmlUnavailable
from lichen.runtime import metering
from lichen.runtime.metering import (
    FORGET_AFTER_S,
    SECONDS_PER_YEAR,
    CpuModel,
    EnergyMeter,
    ProcessUsage,
    attach_energy_meter,
)
from lichen.runtime.state import ReplicaRecord
from lichen.spec.models import SustainabilitySpec
from lichen.testing.clocks import FakeClock

GB = 1024 ** 3
DT = 10.0
PUE = 1.5
BANDS = ("", "_low", "_high")
SPEC = SustainabilitySpec(cpu_tdp_w=100, pue=PUE)


class FakeController:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.replicas: dict[str, SimpleNamespace] = {}
        self.gateway = None
        self.metrics = CollectorRegistry()
        self.events: list[tuple[str, str, str, str, str]] = []
        self.periodic: list[tuple[str, float, object]] = []
        self.app_spec = None

    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None:
        self.events.append((service, kind, reason, message, replica))

    def add_periodic(self, name: str, interval_s: float, fn: object) -> None:
        self.periodic.append((name, interval_s, fn))

    def add(self, rid: str, pid: int, service: str = "api", revision: str = "r1", **placement: object) -> None:
        record = ReplicaRecord(rid, service, revision, 0, "running", pid=pid, placement=dict(placement))
        self.replicas[rid] = SimpleNamespace(record=record)


class FakeHost:
    def __init__(self, logical: int = 1) -> None:
        self.busy, self.total, self.logical = 100.0, 1000.0, logical
        self.model, self.virtual = "Fake CPU", False
        self.procs: dict[int, ProcessUsage | Exception | None] = {}
        self.fail: Exception | None = None

    def cpu_times(self) -> tuple[float, float]:
        if self.fail is not None:
            raise self.fail
        return self.busy, self.total

    def process(self, pid: int) -> ProcessUsage | None:
        usage = self.procs.get(pid)
        if isinstance(usage, Exception):
            raise usage
        return usage

    def memory_total_bytes(self) -> int:
        return 8 * GB

    def cpu_model(self) -> CpuModel:
        return CpuModel(self.model, self.logical, 1, self.virtual)

    def run(self, pid: int, cpu_s: float, rss_gb: float | None = None, started: float = 0.0) -> None:
        old = self.procs.get(pid)
        old = old if isinstance(old, ProcessUsage) else ProcessUsage(0.0, 0, started)
        rss = old.rss_bytes if rss_gb is None else int(rss_gb * GB)
        self.procs[pid] = ProcessUsage(old.cpu_s + cpu_s, rss, old.started_wall_s)


async def _intensity(wall_s: float) -> ea.Estimate:
    return ea.Estimate.measured(400.0, "spec")


async def _nothing() -> None:
    pass


def fake_intensity() -> SimpleNamespace:
    return SimpleNamespace(current=_intensity, describe=lambda: {"chain": []}, aclose=_nothing)


class FakeGateway:
    """The real gateway exposition (GatewayMetrics), counts set by hand; ``metrics = None``: no answer."""

    def __init__(self) -> None:
        self.metrics: GatewayMetrics | None = GatewayMetrics()

    def set(self, service: str, revision: str, n: float) -> None:
        assert self.metrics is not None
        self.metrics.counts["requests"][("/x", service, revision, "200")] = n * 0.75
        self.metrics.counts["requests"][("/y", service, revision, "500")] = n * 0.25

    async def __call__(self) -> str | None:
        return None if self.metrics is None else self.metrics.exposition().decode()


class FakeGpus:
    def __init__(self, count: int = 2) -> None:
        self.energy_mj = [1_000_000] * count
        self.util: list[dict[int, float]] = [{} for _ in range(count)]
        self.fail: Exception | None = None

    def read(self) -> list[GpuReading]:
        if self.fail is not None:
            raise self.fail
        return [GpuReading(i, f"GPU-{i}", e, None, dict(self.util[i])) for i, e in enumerate(self.energy_mj)]

    def close(self) -> None:
        pass


def make(tmp_path: Path, spec: SustainabilitySpec = SPEC, logical: int = 1, **seams: object):
    controller, host = FakeController(), FakeHost(logical)
    seams.setdefault("rapl_root", tmp_path / "nope")
    seams.setdefault("gpus", None)
    seams.setdefault("read_gateway", FakeGateway())
    meter = EnergyMeter(controller, spec, tmp_path, host=host, intensity=fake_intensity(), **seams)
    return meter, controller, host


def tick(meter: EnergyMeter) -> None:
    asyncio.run(meter.tick())


def step(controller: FakeController, host: FakeHost, busy: float, cpu: dict[int, float] | None = None,
         total: float = DT) -> None:
    """``DT`` seconds pass: the machine was ``busy`` CPU seconds of ``total``, each pid in ``cpu`` used that much."""
    controller.clock.advance(DT)
    host.busy += busy
    host.total += total
    for pid, cpu_s in (cpu or {}).items():
        host.run(pid, cpu_s)


def get(meter: EnergyMeter, name: str, **labels: str) -> float | None:
    return meter.controller.metrics.get_sample_value(name, labels)


def band(meter: EnergyMeter, name: str, **labels: str) -> list[float | None]:
    return [get(meter, f"{name}{b}_total", **labels) for b in BANDS]


def total(meter: EnergyMeter, name: str, **match: str) -> float:
    return sum(s.value for m in meter.controller.metrics.collect() for s in m.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in match.items()))


def r(rid: str, source: str, service: str = "api", revision: str = "r1") -> dict[str, str]:
    return {"service": service, "revision": revision, "replica": rid, "source": source}


def two_replicas(controller: FakeController, host: FakeHost) -> None:
    controller.add("api-0", 101)
    controller.add("api-1", 102)
    host.run(101, 50.0, rss_gb=2)
    host.run(102, 20.0, rss_gb=1)


def test_model_shares_active_energy_by_cpu_time_and_reports_idle_and_the_rest_apart(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    two_replicas(controller, host)
    tick(meter)  # baseline only
    assert total(meter, "lichen_energy_joules_total") == 0 and total(meter, "lichen_energy_idle_joules_total") == 0
    assert total(meter, "lichen_energy_unattributed_joules_total") == 0
    step(controller, host, 5.0, {101: 3.0, 102: 1.0})  # 50 % of one CPU: 3 s + 1 s replicas, 1 s the rest
    tick(meter)
    cpu = ea.modelled_cpu_power(100, 0.5).scaled(DT)
    active = ea.modelled_active_power(100, 0.5).scaled(DT)
    mem = ea.modelled_memory_power(1.0).scaled(DT)
    expected = {"api-0": active.scaled(3 / 5) + mem.scaled(2), "api-1": active.scaled(1 / 5) + mem.scaled(1)}
    for rid, estimate in expected.items():
        energy = band(meter, "lichen_energy_joules", **r(rid, "model"))
        assert energy == pytest.approx([estimate.value, estimate.low, estimate.high])
        assert energy[1] <= energy[0] <= energy[2]
        carbon = band(meter, "lichen_carbon_grams", **r(rid, "model"), intensity="spec")
        assert carbon == pytest.approx([e * PUE * 400 / 3.6e6 for e in energy])
    e0 = get(meter, "lichen_energy_joules_total", **r("api-0", "model"))
    e1 = get(meter, "lichen_energy_joules_total", **r("api-1", "model"))
    assert (e0 - 2 * mem.value) / (e1 - mem.value) == pytest.approx(3.0)
    unattributed = band(meter, "lichen_energy_unattributed_joules", source="model")
    assert unattributed == pytest.approx([active.value / 5, active.low / 5, active.high / 5])
    idle = band(meter, "lichen_energy_idle_joules", source="model")
    idle_expected = ea.modelled_idle_power(100).scaled(DT) + mem.scaled(8 - 3)
    assert idle == pytest.approx([idle_expected.value, idle_expected.low, idle_expected.high])
    assert e0 + e1 + unattributed[0] + idle[0] == pytest.approx(cpu.value + 8 * mem.value)
    assert get(meter, "lichen_node_power_watts", source="model") == pytest.approx((cpu.value + 8 * mem.value) / DT)
    assert get(meter, "lichen_carbon_intensity_g_per_kwh", source="spec") == 400.0
    assert get(meter, "lichen_energy_accounting_cpu_seconds_total") > 0
    status = meter.status()
    assert status["node_source"] == "model" and status["cpu"] == {"tdp_w": 100, "source": "sustainability.cpu_tdp_w",
                                                                  "band": list(ea.FULL_LOAD_RANGE)}
    assert status["power_w"]["value"] == pytest.approx((cpu.value + 8 * mem.value) / DT)


def test_no_rapl_is_announced_once_at_start_and_the_meter_is_a_periodic_task(tmp_path: Path) -> None:
    controller = FakeController()
    meter = attach_energy_meter(controller, SPEC, tmp_path, host=FakeHost(), rapl_root=tmp_path / "nope", gpus=None,
                                intensity=fake_intensity(), read_gateway=FakeGateway())
    assert controller.periodic == [("energy meter", SPEC.sample_interval_s, meter.tick)]
    [(service, kind, reason, message, _)] = controller.events
    assert (service, kind, reason) == ("", "EnergySource", "EnergySourceFallback")
    assert "RAPL unreadable" in message and "does not exist" in message and "sustainability.cpu_tdp_w" in message
    assert "does not exist" in meter.status()["problems"]["rapl"]


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 1_000_000_000) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_uj(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_package_and_dram_across_a_wrap_then_a_vanished_zone_falls_back_to_the_model(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    package = zone(root, "intel-rapl:0", "package-0", 900_000_000)
    dram = zone(package, "intel-rapl:0:0", "dram", 10_000_000)
    core = zone(package, "intel-rapl:0:1", "core", 0)
    meter, controller, host = make(tmp_path, rapl_root=root)
    assert controller.events == [] and meter.status()["node_source"] == "rapl"
    assert set(meter.rapl_zones) == {"package-0", "package-0/dram"}
    two_replicas(controller, host)
    tick(meter)
    step(controller, host, 5.0, {101: 3.0, 102: 1.0})
    set_uj(package, 920_000_000)  # 20 J
    set_uj(dram, 15_000_000)  # 5 J
    set_uj(core, 500_000_000)  # inside the package's figure: never added
    tick(meter)  # 2.5 W at 50 %, the quietest sample: idle backed out of it with the model's shape
    idle_w = ea.idle_power_from(2.5, 0.5)
    assert idle_w.low < idle_w.value < idle_w.high < 2.5
    idle_j = [idle_w.value * DT, idle_w.low * DT, idle_w.high * DT]
    assert band(meter, "lichen_energy_idle_joules", source="rapl") == pytest.approx(idle_j)
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "rapl")) == pytest.approx((25 - idle_j[0]) * 3 / 5)
    step(controller, host, 5.0, {101: 3.0, 102: 1.0})
    set_uj(package, 10_000_000)  # wrapped: 80 J to the range, 10 J after
    set_uj(dram, 25_000_000)  # 10 J
    set_uj(core, 900_000_000)
    tick(meter)  # 100 J at 10 W; idle stays the quietest sample's, the rest active shared 3:1:1
    active = [25 - idle_j[0], 100 - idle_j[0]]
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "rapl")) == pytest.approx(sum(active) * 3 / 5)
    assert get(meter, "lichen_energy_joules_total", **r("api-1", "rapl")) == pytest.approx(sum(active) * 1 / 5)
    assert get(meter, "lichen_energy_unattributed_joules_total", source="rapl") == pytest.approx(sum(active) / 5)
    assert get(meter, "lichen_energy_idle_joules_total", source="rapl") == pytest.approx(2 * idle_j[0])
    counted = total(meter, "lichen_energy_joules_total") + total(meter, "lichen_energy_idle_joules_total") + \
        total(meter, "lichen_energy_unattributed_joules_total")
    assert counted == pytest.approx(20 + 5 + 90 + 10)  # memory is in the DRAM zone, not modelled on top
    assert get(meter, "lichen_node_power_watts", source="rapl") == pytest.approx(10.0)
    (package / "energy_uj").unlink()
    step(controller, host, 5.0, {101: 3.0})
    tick(meter)
    [(_, _, reason, message, _)] = controller.events
    assert reason == "EnergySourceFallback" and "RAPL stopped answering" in message and "energy_uj" in message
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "model")) > 0
    assert meter.status()["node_source"] == "model" and "energy_uj" in meter.status()["problems"]["rapl"]


def test_gpu_energy_goes_to_its_holders_by_sm_utilisation_and_an_unheld_gpu_stays_unattributed(tmp_path: Path) -> None:
    gpus = FakeGpus()
    meter, controller, host = make(tmp_path, gpus=lambda: gpus)
    controller.add("api-0", 101, gpu_indices=[0])
    host.run(101, 0.0)
    tick(meter)
    step(controller, host, 1.0)
    gpus.energy_mj = [e + 50_000 for e in gpus.energy_mj]
    tick(meter)
    assert band(meter, "lichen_energy_joules", **r("api-0", "nvml")) == [50.0, 50.0, 50.0]
    assert band(meter, "lichen_energy_unattributed_joules", source="nvml") == [50.0, 50.0, 50.0]
    assert get(meter, "lichen_carbon_grams_total", **r("api-0", "nvml"), intensity="spec") == \
        pytest.approx(50 * PUE * 400 / 3.6e6)
    controller.add("api-1", 102, gpu_indices=[0])  # started during this interval: all its CPU counts
    host.run(102, 0.5, started=controller.clock.wall() + 1)
    gpus.util[0] = {101: 60.0, 102: 20.0}
    step(controller, host, 1.0)
    gpus.energy_mj = [e + 40_000 for e in gpus.energy_mj]
    tick(meter)
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "nvml")) == pytest.approx(50 + 30)
    assert get(meter, "lichen_energy_joules_total", **r("api-1", "nvml")) == pytest.approx(10)
    active = ea.modelled_active_power(100, 0.1).scaled(DT)
    assert get(meter, "lichen_energy_joules_total", **r("api-1", "model")) == pytest.approx(active.value * 0.5)
    gpus.fail = RuntimeError("Xid 79")
    step(controller, host, 1.0)
    tick(meter)
    assert controller.events[-1][2] == "EnergySourceFallback" and "NVML read failed: Xid 79" in \
        controller.events[-1][3]
    assert meter.status()["gpu_source"] is None and get(meter, "lichen_energy_joules_total", **r("api-0", "nvml")) \
        == pytest.approx(80)
    asyncio.run(meter.aclose())


def test_no_nvml_is_a_problem_not_a_crash_and_gpu_tdp_models_a_gpu_replica(tmp_path: Path) -> None:
    def unavailable():
        raise NvmlUnavailable("NVML: no GPU on this machine")

    meter, controller, host = make(tmp_path, spec=SustainabilitySpec(cpu_tdp_w=100, gpu_tdp_w=300), gpus=unavailable)
    assert meter.gpu is None and meter.status()["problems"]["nvml"] == "NVML: no GPU on this machine"
    assert meter.status()["gpu_source"] == "model-gpu"
    controller.add("api-0", 101, gpu_indices=[0])
    host.run(101, 0.0)
    tick(meter)
    step(controller, host, 1.0)
    tick(meter)
    assert band(meter, "lichen_energy_joules", **r("api-0", "model-gpu")) == pytest.approx(
        [0.65 * 300 * DT, 0.2 * 300 * DT, 300 * DT])


def test_sci_is_carbon_over_served_requests_and_a_gateway_reset_counts_from_zero(tmp_path: Path) -> None:
    gateway = FakeGateway()
    meter, controller, host = make(tmp_path, read_gateway=gateway)
    two_replicas(controller, host)
    controller.add("api-2", 103, revision="r2")  # a revision with energy and no requests: no SCI
    host.run(103, 1.0)
    gateway.set("api", "r1", 100)  # served before the meter looked: a baseline
    tick(meter)
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r1") is None
    for served_total in (150, 20):  # the second: the gateway restarted and counted 20 since
        step(controller, host, 5.0, {101: 3.0, 102: 1.0, 103: 0.5})
        gateway.set("api", "r1", served_total)
        tick(meter)
    carbon = total(meter, "lichen_carbon_grams_total", revision="r1")
    assert carbon > 0
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r1") == \
        pytest.approx(carbon / (50 + 20) * 1000)
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r2") is None
    gateway.metrics = None  # no answer: the SCI keeps its window, nothing breaks
    step(controller, host, 5.0)
    tick(meter)
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r1") is not None


def test_a_revision_deployed_after_the_meters_first_look_counts_its_first_requests(tmp_path: Path) -> None:
    gateway = FakeGateway()
    meter, controller, host = make(tmp_path, read_gateway=gateway)
    two_replicas(controller, host)
    gateway.set("api", "r1", 100)
    tick(meter)  # the first look: r1's 100 is a baseline
    controller.add("api-2", 103, revision="r2")
    host.run(103, 0.0)
    step(controller, host, 5.0, {101: 1.0, 102: 1.0, 103: 2.0})
    gateway.set("api", "r2", 40)  # r2 appears after the first look: all 40 are its own
    tick(meter)
    assert meter.requests[("api", "r2")] == 40 and meter.requests[("api", "r1")] == 0
    carbon_r2 = total(meter, "lichen_carbon_grams_total", revision="r2")
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r2") == \
        pytest.approx(carbon_r2 / 40 * 1000)


def test_a_gone_replica_keeps_its_series_until_forget_after_s(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    two_replicas(controller, host)
    tick(meter)
    step(controller, host, 5.0, {101: 3.0})
    tick(meter)
    assert get(meter, "lichen_energy_joules_total", **r("api-1", "model")) is not None
    del controller.replicas["api-1"]
    host.procs.pop(102)
    step(controller, host, 3.0, {101: 3.0})
    tick(meter)
    gone_at = controller.clock.now()
    while controller.clock.now() + DT - gone_at < FORGET_AFTER_S:
        step(controller, host, 3.0)
        tick(meter)
        assert get(meter, "lichen_energy_joules_total", **r("api-1", "model")) is not None
    step(controller, host, 3.0)
    tick(meter)
    assert band(meter, "lichen_energy_joules", **r("api-1", "model")) == [None, None, None]
    assert band(meter, "lichen_carbon_grams", **r("api-1", "model"), intensity="spec") == [None, None, None]
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "model")) is not None
    assert "api-1" not in meter.last_process


def test_the_meters_own_cpu_time_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter(x * 0.25 for x in range(100))
    monkeypatch.setattr(metering, "time", SimpleNamespace(thread_time=lambda: next(readings)))
    meter, controller, host = make(tmp_path)
    for _ in range(3):
        tick(meter)
        step(controller, host, 1.0)
    assert get(meter, "lichen_energy_accounting_cpu_seconds_total") == pytest.approx(0.75)


def test_a_missing_process_or_a_failing_host_never_breaks_the_meter(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    two_replicas(controller, host)
    tick(meter)
    step(controller, host, 5.0, {101: 3.0})
    host.procs[102] = None  # gone between the listing and the read
    tick(meter)
    active = ea.modelled_active_power(100, 0.5).scaled(DT)
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "model")) == pytest.approx(
        active.value * 3 / 5 + ea.modelled_memory_power(2.0).value * DT)
    assert get(meter, "lichen_energy_joules_total", **r("api-1", "model")) is None
    assert get(meter, "lichen_energy_unattributed_joules_total", source="model") == pytest.approx(active.value * 2 / 5)
    before = total(meter, "lichen_energy_joules_total")
    for failure in ("cpu", "process"):
        step(controller, host, 5.0)
        if failure == "cpu":
            host.fail = OSError("/proc/stat unreadable")
        else:
            host.procs[102] = PermissionError("not ours")
        tick(meter)  # swallowed: the sample is lost, the controller goes on
        assert total(meter, "lichen_energy_joules_total") == before
        host.fail = None
    host.procs.pop(102)
    step(controller, host, 5.0, {101: 1.0})
    tick(meter)
    assert total(meter, "lichen_energy_joules_total") > before


def test_embodied_carbon_is_the_per_second_share_times_the_replicas_cpu_share(tmp_path: Path) -> None:
    spec = SustainabilitySpec(cpu_tdp_w=100, embodied_kg_co2e=1000, lifespan_years=4)
    gateway = FakeGateway()
    meter, controller, host = make(tmp_path, spec=spec, logical=2, read_gateway=gateway)
    two_replicas(controller, host)
    gateway.set("api", "r1", 0)
    tick(meter)
    step(controller, host, 5.0, {101: 3.0, 102: 1.0}, total=2 * DT)
    gateway.set("api", "r1", 10)
    tick(meter)
    per_s = 1000 * 1000 / (4 * SECONDS_PER_YEAR)
    grams = {rid: get(meter, "lichen_embodied_carbon_grams_total", service="api", revision="r1", replica=rid)
             for rid in ("api-0", "api-1")}
    assert grams == pytest.approx({"api-0": per_s * DT * 3 / 20, "api-1": per_s * DT * 1 / 20})
    operational = total(meter, "lichen_carbon_grams_total", revision="r1")
    assert get(meter, "lichen_sci_grams_per_1000_requests", service="api", revision="r1") == \
        pytest.approx((operational + sum(grams.values())) / 10 * 1000)


def test_a_changed_section_applies_and_disabling_stops_sampling(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    intensity = meter.intensity
    controller.app_spec = SimpleNamespace(sustainability=SustainabilitySpec(cpu_tdp_w=200, pue=PUE))
    tick(meter)
    assert controller.events[-1][2] == "EnergySettingsApplied" and meter.cpu.tdp_w == 200
    assert meter.intensity is intensity  # only the power settings changed: the chain stays
    step(controller, host, 5.0)
    tick(meter)
    assert get(meter, "lichen_energy_idle_joules_total", source="model") == pytest.approx(
        ea.modelled_idle_power(200).value * DT + ea.modelled_memory_power(8.0).value * DT)
    idle = get(meter, "lichen_energy_idle_joules_total", source="model")
    controller.app_spec = SimpleNamespace(sustainability=SustainabilitySpec(cpu_tdp_w=200, pue=PUE, enabled=False))
    step(controller, host, 5.0)
    tick(meter)
    assert meter.last_s is None and get(meter, "lichen_energy_idle_joules_total", source="model") == idle
    controller.app_spec = SimpleNamespace(sustainability=SustainabilitySpec(cpu_tdp_w=200, pue=PUE))
    step(controller, host, 5.0)
    tick(meter)  # a fresh baseline: the disabled stretch is not counted
    assert get(meter, "lichen_energy_idle_joules_total", source="model") == idle


@pytest.mark.parametrize("source", ["nvml", "rapl"])
def test_energy_before_the_first_tick_is_not_counted(tmp_path: Path, source: str) -> None:
    package = zone(tmp_path / "powercap", "intel-rapl:0", "package-0", 0)
    gpus = FakeGpus(count=1)
    meter, controller, host = make(tmp_path, rapl_root=tmp_path / "powercap", gpus=lambda: gpus)
    for joules in (50, 10):  # time passes between construction and the first tick, then one interval
        step(controller, host, 5.0)
        set_uj(package, int((package / "energy_uj").read_text()) + joules * 1_000_000)
        gpus.energy_mj = [gpus.energy_mj[0] + joules * 1000]
        tick(meter)
    counted = (get(meter, "lichen_energy_idle_joules_total", source=source) or 0.0) + \
        get(meter, "lichen_energy_unattributed_joules_total", source=source)
    assert counted == pytest.approx(10.0)


def test_a_psys_zone_is_not_added_to_the_package(tmp_path: Path) -> None:
    package = zone(tmp_path / "powercap", "intel-rapl:0", "package-0", 0)
    psys = zone(tmp_path / "powercap", "intel-rapl:1", "psys", 0)
    meter, controller, host = make(tmp_path, rapl_root=tmp_path / "powercap")
    tick(meter)
    step(controller, host, 5.0)
    set_uj(package, 20_000_000)
    set_uj(psys, 30_000_000)  # the whole platform, package included
    tick(meter)
    assert get(meter, "lichen_energy_idle_joules_total", source="rapl") + \
        get(meter, "lichen_energy_unattributed_joules_total", source="rapl") == pytest.approx(20.0)


def test_a_restart_under_the_same_replica_id_counts_the_new_process_from_its_start(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    two_replicas(controller, host)  # api-0 (pid 101) has used 50 CPU s
    tick(meter)
    controller.clock.advance(DT)
    host.busy += 5.0
    host.total += DT
    controller.replicas["api-0"].record.pid = 201  # restarted: same id, a new process that used 2 CPU s so far
    host.procs[201] = ProcessUsage(2.0, GB, controller.clock.wall() - 1.0)
    tick(meter)
    active = ea.modelled_active_power(100, 0.5).scaled(DT).value
    assert get(meter, "lichen_energy_joules_total", **r("api-0", "model")) == pytest.approx(
        active * 2 / 5 + ea.modelled_memory_power(1.0).value * DT)


def test_in_a_vm_a_table_tdp_is_not_taken_for_this_machines_share(tmp_path: Path) -> None:
    spec = SustainabilitySpec(pue=PUE)  # no cpu_tdp_w: the table decides
    meter, _, host = make(tmp_path, spec=spec, logical=2)
    host.model, host.virtual = "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", True
    meter._configure(spec)
    assert not meter.cpu.known and meter.cpu.tdp_w == pytest.approx(8.0)  # 4 W per logical CPU
    assert "host's whole package" in meter.cpu.source and meter.cpu_range == ea.UNKNOWN_CPU_RANGE
    host.virtual = False
    meter._configure(spec)
    assert meter.cpu.known and meter.cpu.tdp_w > 100  # bare metal: the package's TDP


def test_gpus_named_by_uuid_and_gpu_work_in_a_child_process_reach_their_replica(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1,GPU-0")  # position 0 is NVML's device 1
    gpus = FakeGpus(count=2)
    meter, controller, host = make(tmp_path, gpus=lambda: gpus)
    controller.add("train-0", 301, service="train", gpu_indices=[0])
    host.procs[301] = ProcessUsage(1.0, GB, 0.0, pids=(301, 302))
    tick(meter)
    step(controller, host, 5.0)
    gpus.energy_mj = [gpus.energy_mj[0] + 7_000, gpus.energy_mj[1] + 30_000]
    gpus.util[1] = {302: 80.0}  # the child does the GPU work
    tick(meter)
    assert get(meter, "lichen_energy_joules_total", **r("train-0", "nvml", service="train")) == pytest.approx(30.0)
    assert get(meter, "lichen_energy_unattributed_joules_total", source="nvml") == pytest.approx(7.0)


def test_embodied_carbon_follows_reserved_cores_where_the_replica_has_them(tmp_path: Path) -> None:
    spec = SustainabilitySpec(cpu_tdp_w=100, embodied_kg_co2e=1000, lifespan_years=4)
    meter, controller, host = make(tmp_path, spec=spec, logical=4)
    controller.add("api-0", 101, cpu_cores=1.0)
    host.run(101, 1.0)
    tick(meter)
    step(controller, host, 1.0, {101: 0.1}, total=4 * DT)  # nearly idle, yet a quarter of the machine is its own
    tick(meter)
    per_s = 1000 * 1000 / (4 * SECONDS_PER_YEAR)
    assert get(meter, "lichen_embodied_carbon_grams_total", service="api", revision="r1", replica="api-0") == \
        pytest.approx(per_s * DT / 4)


def test_replicas_holding_gpus_nvml_cannot_read_raise_one_event(tmp_path: Path) -> None:
    def unavailable():
        raise NvmlUnavailable("NVML: NVML Shared Library Not Found")

    meter, controller, host = make(tmp_path, gpus=unavailable)
    controller.add("train-0", 301, service="train", gpu_indices=[0])
    host.run(301, 1.0)
    for _ in range(3):
        step(controller, host, 5.0, {301: 1.0})
        tick(meter)
    said = [e for e in controller.events if "hold GPUs" in e[3]]
    assert len(said) == 1 and "not counted" in said[0][3] and "Library Not Found" in said[0][3]


def test_each_replicas_usage_is_exported_for_lichen_advise_even_with_accounting_off(tmp_path: Path) -> None:
    meter, controller, host = make(tmp_path)
    two_replicas(controller, host)
    host.procs[102] = ProcessUsage(20.0, GB, 0.0, data_bytes=3 * GB)
    tick(meter)
    labels = {"service": "api", "revision": "r1", "replica": "api-0"}
    assert get(meter, "lichen_replica_cpu_seconds_total", **labels) == 50.0
    assert get(meter, "lichen_replica_memory_working_set_bytes", **labels) == 2 * GB
    assert get(meter, "lichen_replica_memory_data_bytes", **{**labels, "replica": "api-1"}) == 3 * GB
    controller.app_spec = SimpleNamespace(sustainability=SustainabilitySpec(cpu_tdp_w=100, pue=PUE, enabled=False))
    step(controller, host, 5.0, {101: 4.0})
    del host.procs[102]  # gone: it drops out at once
    tick(meter)
    assert get(meter, "lichen_replica_cpu_seconds_total", **labels) == 54.0
    assert get(meter, "lichen_replica_cpu_seconds_total", **{**labels, "replica": "api-1"}) is None
    assert total(meter, "lichen_energy_joules_total") == 0, "accounting stays off; only usage is read"
