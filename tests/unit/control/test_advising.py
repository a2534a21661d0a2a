"""lichen.control.advising: VPA-style right-sizing from usage samples, as plain data."""

from __future__ import annotations

import pytest

from lichen.control.advising import MIB, Policy, Settings, Usage, advise

HOUR_S = 3600.0


def usage(cpu: list[float], memory_mib: list[float], inflight: list[float] | None = None, **extra) -> Usage:
    return Usage(window_s=HOUR_S, cpu_cores=cpu, memory_bytes=[m * MIB for m in memory_mib],
                 inflight=inflight or [0.0] * len(cpu), **extra)


def changes(advice) -> dict:
    return {c.field: c for c in advice.changes}


def test_cpu_is_the_p95_plus_the_margin_rounded_up_and_memory_the_peak_plus_the_margin() -> None:
    cpu = [0.10] * 90 + [0.30] * 10  # p95 = 0.30
    advice = advise("api", usage(cpu, [100.0] * 99 + [200.0]), Settings(replicas=1, cpu=2.0, memory_bytes=2048 * MIB))
    found = changes(advice)
    assert found["resources.cpu"].recommended == pytest.approx(0.35)  # 0.30 x 1.15 = 0.345 -> 0.35
    assert found["resources.memory"].recommended == "240Mi"  # 200Mi x 1.15 = 230Mi -> the next 16Mi step
    assert found["resources.memory"].current == "2Gi"
    assert advice.observed["memory_bytes"]["max"] == 200 * MIB


def test_floors_keep_an_idle_service_schedulable() -> None:
    advice = advise("api", usage([0.001] * 50, [10.0] * 50), Settings(replicas=1, cpu=1.0, memory_bytes=1024 * MIB))
    found = changes(advice)
    assert found["resources.cpu"].recommended == pytest.approx(0.05)
    assert found["resources.memory"].recommended == "64Mi"


def test_a_throttled_replica_grows_by_half_even_when_the_percentile_says_less() -> None:
    advice = advise("api", usage([0.49] * 50, [100.0] * 50), Settings(replicas=1, cpu=0.5, memory_bytes=1024 * MIB))
    change = changes(advice)["resources.cpu"]
    assert change.recommended == pytest.approx(0.75) and "throttled" in change.reason


def test_memory_near_its_limit_grows_by_a_fifth() -> None:
    advice = advise("api", usage([0.1] * 50, [950.0] * 50), Settings(replicas=1, cpu=0.12, memory_bytes=1024 * MIB))
    change = changes(advice)["resources.memory"]
    assert "near its limit" in change.reason
    assert change.recommended == "1232Mi"  # max(950 x 1.15 = 1092.5 -> 1104Mi, 1024 x 1.2 = 1228.8 -> 1232Mi)


def test_values_within_the_tolerance_are_left_alone() -> None:
    advice = advise("api", usage([0.30] * 50, [100.0] * 50), Settings(replicas=1, cpu=0.38, memory_bytes=120 * MIB))
    assert advice.changes == ()  # 0.35 is within 20 % of 0.38; 115Mi -> 128Mi is within 20 % of 120Mi


def test_unset_limits_get_one() -> None:
    found = changes(advise("api", usage([0.2] * 50, [100.0] * 50), Settings(replicas=1)))
    assert found["resources.cpu"].current is None and found["resources.cpu"].recommended == pytest.approx(0.25)
    assert found["resources.memory"].current is None


def test_too_few_samples_give_no_advice() -> None:
    advice = advise("api", usage([0.2] * 5, [100.0] * 5), Settings(replicas=3, cpu=2.0))
    assert advice.changes == () and advice.skipped is not None and "5 usage samples" in advice.skipped


def test_replicas_follow_in_flight_requests_at_70_percent_of_max_concurrency() -> None:
    inflight = [20.0] * 90 + [100.0] * 10  # p95: 100 in flight; 0.7 x 32 = 22.4 per replica -> 5 replicas
    advice = advise("api", usage([0.2] * 100, [100.0] * 100, inflight), Settings(replicas=2, cpu=0.25,
                                                                                 max_concurrency=32))
    change = changes(advice)["replicas"]
    assert (change.current, change.recommended) == (2, 5)


def test_fewer_replicas_keep_the_availability_floor_and_resize_for_the_load_they_take_over() -> None:
    cpu = [0.05] * 20 + [0.25] * 80  # baseline (p10) 0.05, busy 0.25 each over 4 replicas
    advice = advise("api", usage(cpu, [100.0] * 100, [1.0] * 100), Settings(replicas=4, cpu=1.0))
    found = changes(advice)
    assert found["replicas"].recommended == 2 and "availability" in found["replicas"].reason
    # each of 2 replicas carries twice the busy part: 0.05 + 0.20 x 2 = 0.45 -> x 1.15 = 0.5175 -> 0.55
    assert found["resources.cpu"].recommended == pytest.approx(0.55)
    one = advise("api", usage(cpu, [100.0] * 100, [1.0] * 100), Settings(replicas=1, cpu=1.0))
    assert "replicas" not in changes(one), "one replica is never raised to the floor"


def test_swinging_load_gets_an_autoscale_note_not_a_change() -> None:
    inflight = [5.0] * 60 + [200.0] * 2  # p50 needs 1 replica, the peak needs 5 (0.7 x 64 = 44.8)
    advice = advise("api", usage([0.2] * 62, [100.0] * 62, inflight), Settings(replicas=1, cpu=0.25))
    assert any("consider autoscale" in note and "max: 8" in note for note in advice.notes)
    assert all(not c.field.startswith("autoscale") for c in advice.changes)


def test_autoscale_max_grows_when_the_autoscaler_hit_it_and_the_limit_stays_above_a_cpu_target() -> None:
    scale = {"min": 1, "max": 4, "metric": "cpu", "target": 0.4}
    advice = advise("api", usage([0.1] * 50, [100.0] * 50, [1.0] * 50, desired_replicas=[2.0] * 40 + [4.0] * 10),
                    Settings(replicas=1, cpu=1.0, autoscale=scale))
    found = changes(advice)
    assert found["autoscale.max"].recommended == 6
    # use says 0.15, but a cpu target of 0.4 cores must stay within the limit (else the spec is invalid)
    assert found["resources.cpu"].recommended == pytest.approx(0.4) and "autoscale.target" in found["resources.cpu"].reason
    assert "replicas" not in found, "an autoscaled service's count is the autoscaler's"
    unset = changes(advise("api", usage([0.1] * 50, [100.0] * 50, [1.0] * 50),
                           Settings(replicas=1, autoscale={**scale, "target": 0.5})))
    assert unset["resources.cpu"].recommended == pytest.approx(0.5)


def test_throttling_is_judged_on_what_was_seen_not_on_the_load_a_smaller_count_would_carry() -> None:
    cpu = [0.05] * 20 + [0.25] * 80  # 4 replicas well under 0.5; at 2 replicas each would carry 0.45
    found = changes(advise("api", usage(cpu, [100.0] * 100, [1.0] * 100), Settings(replicas=4, cpu=0.5)))
    assert found["replicas"].recommended == 2
    assert "resources.cpu" not in found, "0.55 is within 20 % of 0.5: no throttling bump to 0.75"


def test_without_in_flight_samples_the_replica_count_is_left_alone_with_a_note() -> None:
    advice = advise("api", Usage(window_s=HOUR_S, cpu_cores=[0.1] * 50, memory_bytes=[100.0 * MIB] * 50),
                    Settings(replicas=6, cpu=0.15))
    assert "replicas" not in changes(advice) and any("no in-flight samples" in note for note in advice.notes)


def test_a_platform_without_the_memory_figure_gets_no_memory_advice() -> None:
    advice = advise("api", usage([0.1] * 50, [0.0] * 50), Settings(replicas=1, cpu=0.12, memory_bytes=1024 * MIB))
    assert "resources.memory" not in changes(advice)


def test_the_energy_change_prices_the_removed_replicas_idle_draw_and_the_embodied_share() -> None:
    cpu = [0.02] * 20 + [0.1] * 80
    # measured over the hour: 20000 J (0.1 g per J), of which 4 replicas' 2 GB each drew 4 x 2 x 0.375 x 3600
    # = 10800 J, so the CPU's 9200 J over 100 CPU-seconds are 92 J per CPU-second
    advice = advise("api", usage(cpu, [100.0] * 100, [1.0] * 100, cpu_s=100.0, energy_j=20000.0, carbon_g=2000.0,
                                 embodied_g=36.0, mean_replicas=4.0, resident_bytes=2 * 1024 ** 3),
                    Settings(replicas=4, cpu=0.5))
    found = changes(advice)
    assert found["replicas"].recommended == 2
    idle_w = 0.02 * 92.0 + 2 * 0.375  # the p10 CPU of a replica x CPU joules per CPU-second, and 2 GB resident
    assert advice.energy_kwh_per_day == pytest.approx(-2 * idle_w * 86400 / 3.6e6)
    assert advice.carbon_g_per_day == pytest.approx(-2 * idle_w * 86400 * 0.1)
    per_core_s = 36.0 / (0.5 * 4 * HOUR_S)
    new_cpu = found["resources.cpu"].recommended
    assert advice.embodied_g_per_day == pytest.approx((new_cpu * 2 - 0.5 * 4) * per_core_s * 86400)
    unknown = advise("api", usage(cpu, [100.0] * 100), Settings(replicas=4, cpu=0.5))
    assert unknown.energy_kwh_per_day is None and unknown.carbon_g_per_day is None


def test_a_stricter_policy_changes_the_answer() -> None:
    cpu = [0.1] * 50
    loose = changes(advise("api", usage(cpu, [100.0] * 50), Settings(replicas=1, cpu=1.0)))
    strict = changes(advise("api", usage(cpu, [100.0] * 50), Settings(replicas=1, cpu=1.0), policy=Policy(margin=1.0)))
    assert loose["resources.cpu"].recommended < strict["resources.cpu"].recommended == pytest.approx(0.2)
