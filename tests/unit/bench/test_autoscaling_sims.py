"""The pure simulations of bench/autoscaling.py (bench/_autoscaling_sims.py): each peer's timing as its
defaults say, the queue model, and the figures the bench reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import _autoscaling_sims as sims  # noqa: E402

SERVICE = sims.Service(concurrency=4, service_s=0.05)
CAPACITY = SERVICE.capacity_per_s  # 80 req/s per replica


def trace(phases: list[tuple[float, float]], event_s: float | None = None, event_rate: float | None = None
          ) -> sims.Trace:
    """(seconds, replicas' worth of load) phases."""
    rates: list[float] = []
    for seconds, replicas in phases:
        rates.extend([replicas * CAPACITY] * round(seconds / sims.DT_S))
    return sims.Trace("test", tuple(rates), event_s, event_rate, "test")


def run(policy: sims.Policy, t: sims.Trace, startup_s: float = 1.0, service: sims.Service = SERVICE,
        max_replicas: int = 8) -> sims.SimRun:
    arrivals = sims.arrivals_per_step(sims.poisson_arrivals(t, seed=3), len(t.rates_per_s))
    return sims.Sim(t, arrivals, service, startup_s, policy, 1, max_replicas).simulate()


def first_up(r: sims.SimRun) -> float:
    return next(at for at, before, after in r.decisions if after > before)


STEP = [(1.0, 0.5), (79.0, 2.5)]  # a 5x step at t = 1 s


def test_hpa_makes_no_decision_before_its_15_s_sync() -> None:
    r = run(sims.HpaPolicy(target=4), trace(STEP))
    assert first_up(r) == pytest.approx(15.0)  # the step came at 1 s; the first sync is at 15 s
    # the next change waits for the next sync, and grows by at most max(4 pods, 100 %)
    (t1, _, n1), (t2, b2, n2) = r.decisions[:2]
    assert t2 - t1 == pytest.approx(15.0) and n1 == 1 + 4 and n2 <= max(b2 + 4, 2 * b2)


def test_hpa_keeps_its_replicas_for_the_300_s_downscale_stabilisation() -> None:
    r = run(sims.HpaPolicy(target=4), trace([(1.0, 0.5), (44.0, 2.5), (200.0, 0.25)]))
    downs = [at for at, before, after in r.decisions if after < before]
    assert r.decisions and not downs  # the load fell at 45 s; 300 s had not passed by 245 s


def test_ray_waits_30_s_of_wanting_more_before_scaling_up() -> None:
    r = run(sims.RayPolicy(target=4), trace(STEP))
    up = first_up(r)
    # reports every 10 s, then int(30 s / 0.1 s) consecutive loops that all want more
    assert up >= 1.0 + 30.0
    assert up == pytest.approx(10.0 + 30.0 + 0.1, abs=0.11)  # the first report at 10 s, then 30 s of wanting


def test_ray_does_not_see_the_queue_in_front_of_its_replicas() -> None:
    # 8x a replica's capacity: the queue is huge, but one replica reports at most max_ongoing requests
    r = run(sims.RayPolicy(target=4), trace([(1.0, 0.5), (59.0, 8.0)]))
    policy_cap = sims.RayPolicy(target=4).max_ongoing
    assert policy_cap == 10
    assert r.decisions[0][2] <= policy_cap // 4 + 1  # sized on 10 in flight, not on the thousands queued


def test_kpa_panics_on_a_5x_step_within_one_tick() -> None:
    kpa = sims.KpaPolicy(target=4)
    t = trace([(10.0, 0.5), (30.0, 2.5)])
    r = run(kpa, t)
    up = first_up(r)
    assert 10.0 < up <= 12.0 + 1e-6  # the first 2 s tick after the step
    assert kpa.max_panic_pods >= 3  # it sized from the panic window and keeps that count while panicking


def test_kpa_never_scales_down_while_panicking() -> None:
    r = run(sims.KpaPolicy(target=4), trace([(10.0, 0.5), (4.0, 5.0), (120.0, 0.5)]))
    up_at = first_up(r)
    downs = [at for at, before, after in r.decisions if after < before]
    assert downs and all(at > up_at + 60.0 for at in downs), r.decisions


def test_lichen_policy_decides_within_a_second_or_two_of_a_step() -> None:
    r = run(sims.peers(target=4, max_replicas=8)[0], trace(STEP))
    assert first_up(r) - 1.0 <= 2.0


@pytest.mark.parametrize("index", range(4))
def test_constant_load_below_capacity_has_no_slo_violation_second(index: int) -> None:
    policy = sims.peers(target=4, max_replicas=8)[index]
    t = trace([(120.0, 0.5)])
    figures = sims.figures(run(policy, t), t, SERVICE)
    assert figures["slo_violation_s"] == 0 and figures["failed_or_dropped"] == 0, (policy.name, figures)
    assert figures["replica_s"] == pytest.approx(120.0)  # one replica throughout


class Never:
    name = "never scales"

    def step(self, sim: sims.Sim) -> int | None:
        return None


def test_an_overloaded_queue_violates_the_slo_and_drops_past_the_timeout() -> None:
    service = sims.Service(concurrency=4, service_s=0.05, timeout_s=2.0)
    t = trace([(10.0, 2.0)])  # twice one replica's capacity, never scaled
    r = run(Never(), t, service=service)
    figures = sims.figures(r, t, service)
    assert figures["failed_or_dropped"] > 0.2 * figures["requests"]
    assert figures["slo_violation_s"] >= 8
    served = [lat for _, lat, _ in r.requests if lat is not None]
    assert max(served) <= service.timeout_s + service.service_s + sims.DT_S


def test_figures_first_decision_time_to_capacity_and_flaps() -> None:
    t = trace([(10.0, 0.5), (20.0, 2.5)], event_s=10.0, event_rate=2.5 * CAPACITY)
    r = sims.SimRun("made up", requests=[(1.0, 0.05, 1.0)], decisions=[(11.0, 1, 4), (20.0, 4, 3), (25.0, 3, 5)],
                    ready=[(0.0, 1), (12.5, 4), (20.0, 3)], replica_s=10.0)
    figures = sims.figures(r, t, SERVICE)
    assert figures["first_decision_s"] == 1.0 and figures["time_to_capacity_s"] == 2.5
    assert figures["flaps"] == 2 and figures["max_desired"] == 5
    assert figures["under_capacity_s"] == pytest.approx(2.5)


def test_poisson_arrivals_follow_the_trace_rate() -> None:
    t = trace([(30.0, 0.5), (30.0, 2.5)])
    times = sims.poisson_arrivals(t, seed=5)
    low, high = sum(1 for x in times if x < 30), sum(1 for x in times if x >= 30)
    assert low == pytest.approx(30 * 40, rel=0.1) and high == pytest.approx(30 * 200, rel=0.05)
    assert times == sorted(times) and sims.poisson_arrivals(t, seed=5) == times


@pytest.mark.parametrize("name", sims.TRACES)
def test_traces_peak_at_five_times_their_base(name: str) -> None:
    t = sims.build_trace(name, CAPACITY, quick=True)
    assert min(t.rates_per_s) == pytest.approx(0.5 * CAPACITY)
    assert max(t.rates_per_s) == pytest.approx(2.5 * CAPACITY, rel=0.21)  # noise: +-20 %
