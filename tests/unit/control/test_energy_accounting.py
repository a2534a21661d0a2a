"""Energy and carbon sums (lichen.control.energy_accounting): estimates keep their source and band, the power model's
shape and band, attribution by CPU share with idle apart, carbon and the SCI per 1,000 requests."""

from __future__ import annotations

import pytest

from lichen.control.energy_accounting import (
    Estimate,
    GpuInterval,
    ReplicaUsage,
    account_interval,
    attribute,
    carbon_g,
    modelled_active_power,
    modelled_cpu_power,
    modelled_idle_power,
    modelled_memory_power,
    sci_per_1000_requests,
    sum_estimates,
)


def test_a_measurement_has_no_band_and_a_model_always_has_one() -> None:
    rapl = Estimate.measured(100.0, "rapl")
    assert (rapl.low, rapl.high, rapl.relative_error) == (100.0, 100.0, 0.0)
    model = modelled_cpu_power(100.0, 0.5)
    assert model.source == "model" and model.value == pytest.approx(65.0)  # 100 x (0.3 + 0.7 x 0.5)
    assert model.low == pytest.approx(0.8 * 100 * (0.2 + 0.8 * 0.5)) and model.high == pytest.approx(1.2 * 100 * 0.75)
    assert model.low < model.value < model.high and model.relative_error > 0.2
    assert (rapl + model).source == "model+rapl"


def test_the_power_model_is_linear_from_its_idle_floor_and_clamped() -> None:
    points = [modelled_cpu_power(200.0, u).value for u in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert points[0] == pytest.approx(60.0) and points[-1] == pytest.approx(200.0)
    steps = [b - a for a, b in zip(points, points[1:], strict=False)]
    assert all(s == pytest.approx(steps[0]) for s in steps)
    assert modelled_cpu_power(200.0, 1.7).value == points[-1] and modelled_cpu_power(200.0, -1).value == points[0]
    memory = modelled_memory_power(16.0)
    assert (memory.value, memory.low, memory.high) == (6.0, 4.0, 8.0)


def test_active_energy_goes_by_cpu_share_and_idle_stays_apart() -> None:
    node, idle = Estimate.measured(1000.0, "rapl"), Estimate.measured(400.0, "rapl")
    split = attribute(node, idle, {"api-0": 30.0, "api-1": 10.0}, other_cpu_s=20.0)
    assert split.by_replica["api-0"].value == pytest.approx(300.0) and split.by_replica["api-1"].value == \
        pytest.approx(100.0)
    assert split.unattributed.value == pytest.approx(200.0) and split.idle.value == 400.0
    total = sum(e.value for e in split.by_replica.values()) + split.unattributed.value + split.idle.value
    assert total == pytest.approx(1000.0)  # nothing dropped, nothing counted twice
    nobody = attribute(node, idle, {})
    assert nobody.by_replica == {} and nobody.unattributed.value == 600.0


def test_carbon_and_the_sci_per_1000_requests() -> None:
    energy = Estimate.measured(3.6e6, "rapl")  # 1 kWh
    intensity = Estimate(300.0, 250.0, 350.0, "trace.csv")
    grams = carbon_g(energy, intensity, pue=1.2)
    assert (grams.value, grams.low, grams.high) == pytest.approx((360.0, 300.0, 420.0))
    assert grams.source == "rapl@trace.csv"
    sci = sci_per_1000_requests(energy, intensity, requests=2000, pue=1.2, embodied_g=40.0)
    assert sci is not None and sci.value == pytest.approx((360.0 + 40.0) / 2)
    assert sci_per_1000_requests(energy, intensity, requests=0) is None


def _usage(replica: str, cpu_s: float, rss_gb: float = 0.0, gpus: tuple[int, ...] = ()) -> ReplicaUsage:
    return ReplicaUsage(replica, replica.split("-")[0], "r1", cpu_s, rss_gb, gpus)


def test_an_interval_shares_cpu_energy_by_cpu_time_with_other_processes_unattributed() -> None:
    usages = [_usage("api-0", 30.0), _usage("api-1", 10.0)]
    account = account_interval(usages, cpu_j=Estimate.measured(1000.0, "rapl"),
                               cpu_idle_j=Estimate.measured(400.0, "rapl"), busy_cpu_s=60.0)
    assert set(account.by_replica) == {("api-0", "rapl"), ("api-1", "rapl")}
    assert account.by_replica[("api-0", "rapl")].value == pytest.approx(300.0)  # 30 of 60 busy CPU s of 600 J
    assert account.by_replica[("api-1", "rapl")].value == pytest.approx(100.0)
    assert account.unattributed.value == pytest.approx(200.0) and account.idle.value == 400.0
    shared = sum(e.value for e in account.by_replica.values()) + account.unattributed.value
    assert shared == pytest.approx(1000.0 - 400.0)  # the replicas and the rest make up the active energy
    assert account.gpu_unattributed is None
    # busy time below the replicas' own (sampling skew): nothing is left for other processes
    skewed = account_interval(usages, cpu_j=Estimate.measured(1000.0, "rapl"),
                              cpu_idle_j=Estimate.measured(400.0, "rapl"), busy_cpu_s=20.0)
    assert skewed.unattributed.value == 0.0 and skewed.by_replica[("api-0", "rapl")].value == pytest.approx(450.0)


def test_a_modelled_interval_uses_the_models_active_energy_and_adds_memory_by_resident_gb() -> None:
    cpu_j, idle_j = modelled_cpu_power(100.0, 0.5).scaled(10.0), modelled_idle_power(100.0).scaled(10.0)
    active_j = modelled_active_power(100.0, 0.5).scaled(10.0)
    per_gb = modelled_memory_power(1.0).scaled(10.0)  # J per GB over 10 s
    usages = [_usage("api-0", 3.0, rss_gb=2.0), _usage("api-1", 1.0, rss_gb=0.5)]
    account = account_interval(usages, cpu_j=cpu_j, cpu_idle_j=idle_j, busy_cpu_s=4.0, cpu_active_j=active_j,
                               memory_j_per_gb=per_gb)
    api0 = account.by_replica[("api-0", "model")]
    assert api0.value == pytest.approx(0.75 * active_j.value + 2.0 * per_gb.value)
    assert api0.low == pytest.approx(0.75 * active_j.low + 2.0 * per_gb.low)
    assert api0.high == pytest.approx(0.75 * active_j.high + 2.0 * per_gb.high)
    assert account.by_replica[("api-1", "model")].value == pytest.approx(0.25 * active_j.value + 0.5 * per_gb.value)
    assert account.unattributed.value == 0.0 and account.idle == idle_j
    assert len(account.by_replica) == 2


def test_memory_is_filed_under_the_nodes_source_even_for_a_replica_without_cpu_time() -> None:
    per_gb = Estimate(2.0, 1.0, 3.0, "memory-model")
    account = account_interval([_usage("db-0", 0.0, rss_gb=4.0)], cpu_j=Estimate(50.0, 40.0, 60.0, "model"),
                               cpu_idle_j=Estimate(20.0, 15.0, 25.0, "model"), busy_cpu_s=0.0,
                               memory_j_per_gb=per_gb)
    assert account.by_replica == {("db-0", "model"): Estimate(8.0, 4.0, 12.0, "model")}


def test_a_gpu_is_split_by_utilisation_or_equally_when_none_is_reported() -> None:
    usages = [_usage("llm-0", 1.0, gpus=(0, 1)), _usage("llm-1", 1.0, gpus=(0, 1))]
    common = {"cpu_j": Estimate.measured(100.0, "rapl"), "cpu_idle_j": Estimate.measured(50.0, "rapl"),
              "busy_cpu_s": 2.0}
    by_use = account_interval(usages, **common, gpus={
        0: GpuInterval(Estimate.measured(900.0, "nvml"), {"llm-0": 60.0, "llm-1": 30.0, "stranger": 99.0})})
    assert by_use.by_replica[("llm-0", "nvml")].value == pytest.approx(600.0)
    assert by_use.by_replica[("llm-1", "nvml")].value == pytest.approx(300.0)
    assert not any(replica == "stranger" for replica, _ in by_use.by_replica)
    equal = account_interval(usages, **common, gpus={0: GpuInterval(Estimate.measured(900.0, "nvml"))})
    assert [equal.by_replica[(r, "nvml")].value for r in ("llm-0", "llm-1")] == [450.0, 450.0]
    idle_gpu = account_interval(usages, **common, gpus={
        0: GpuInterval(Estimate.measured(900.0, "nvml"), {"llm-0": 0.0, "llm-1": 0.0})})
    assert [idle_gpu.by_replica[(r, "nvml")].value for r in ("llm-0", "llm-1")] == [450.0, 450.0]
    two = account_interval(usages, **common, gpus={0: GpuInterval(Estimate.measured(900.0, "nvml"), {"llm-0": 50.0}),
                                                  1: GpuInterval(Estimate.measured(100.0, "nvml"))})
    assert two.by_replica[("llm-0", "nvml")].value == pytest.approx(900.0 + 50.0)  # GPU 0 all its, half of GPU 1
    assert two.by_replica[("llm-1", "nvml")].value == pytest.approx(50.0)
    assert two.gpu_unattributed is None


def test_a_gpu_nobody_holds_stays_unattributed() -> None:
    account = account_interval([_usage("api-0", 1.0, gpus=(0,))], cpu_j=Estimate.measured(10.0, "rapl"),
                               cpu_idle_j=Estimate.measured(5.0, "rapl"), busy_cpu_s=1.0,
                               gpus={0: GpuInterval(Estimate.measured(70.0, "nvml")),
                                     1: GpuInterval(Estimate.measured(30.0, "nvml"), {"api-0": 80.0}),
                                     2: GpuInterval(Estimate(20.0, 10.0, 40.0, "nvml-power"))})
    assert account.gpu_unattributed is not None
    unheld = account.gpu_unattributed
    assert (unheld.value, unheld.low, unheld.high, unheld.source) == (50.0, 40.0, 70.0, "nvml+nvml-power")
    assert account.by_replica[("api-0", "nvml")].value == 70.0
    assert ("api-0", "nvml-power") not in account.by_replica


def test_a_replica_with_modelled_cpu_and_measured_gpu_energy_gets_two_entries() -> None:
    account = account_interval([_usage("llm-0", 5.0, gpus=(0,))], cpu_j=Estimate(80.0, 60.0, 100.0, "model"),
                               cpu_idle_j=Estimate(30.0, 20.0, 50.0, "model"), busy_cpu_s=5.0,
                               gpus={0: GpuInterval(Estimate.measured(400.0, "nvml"), {"llm-0": 90.0})})
    assert set(account.by_replica) == {("llm-0", "model"), ("llm-0", "nvml")}
    assert account.by_replica[("llm-0", "model")].value == pytest.approx(50.0)
    assert account.by_replica[("llm-0", "nvml")] == Estimate.measured(400.0, "nvml")
    total = sum_estimates(list(account.by_replica.values()))
    assert total is not None and total.value == pytest.approx(450.0) and total.source == "model+nvml"


def test_the_active_power_model_is_total_minus_idle_with_a_narrower_band() -> None:
    for u in (0.1, 0.5, 1.0):
        active, total, idle = modelled_active_power(200.0, u), modelled_cpu_power(200.0, u), modelled_idle_power(200.0)
        assert active.value == pytest.approx(total.value - idle.value) and active.source == "model"
        assert active.low < active.value < active.high
        assert active.high - active.low < (total.high - idle.low) - max(0.0, total.low - idle.high)
    assert modelled_active_power(200.0, 0.5).value == pytest.approx(70.0)  # 200 x 0.7 x 0.5
    assert modelled_active_power(200.0, 0.0) == Estimate(0.0, 0.0, 0.0, "model")
    assert modelled_active_power(200.0, 1.5) == modelled_active_power(200.0, 1.0)


def test_summing_estimates_adds_bands_and_joins_sources() -> None:
    assert sum_estimates([]) is None
    one = Estimate(1.0, 0.5, 2.0, "model")
    assert sum_estimates((one,)) == one
    total = sum_estimates([one, Estimate.measured(3.0, "rapl"), Estimate(1.0, 1.0, 1.0, "model")])
    assert total == Estimate(5.0, 4.5, 6.0, "model+rapl")
