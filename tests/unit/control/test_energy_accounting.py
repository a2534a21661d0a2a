"""Energy and carbon sums (lichen.control.energy_accounting): estimates keep their source and band, the power model's
shape and band, attribution by CPU share with idle apart, carbon and the SCI per 1,000 requests."""

from __future__ import annotations

import pytest

from lichen.control.energy_accounting import (
    Estimate,
    attribute,
    carbon_g,
    modelled_cpu_power,
    modelled_memory_power,
    sci_per_1000_requests,
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
