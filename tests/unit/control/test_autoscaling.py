"""The autoscaling policy (lichen.control.autoscaling) on plain data and a fake clock: step, ramp, spike, noise,
missing and stale data, a replica that never becomes ready, and the bounds."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from lichen.control.autoscaling import Decision, Replicas, Sample, Settings, State, decide
from lichen.spec.models import AutoscaleSpec
from lichen.testing import FakeClock

INTERVAL_S = 1.0


@dataclass
class Run:
    """A service under a demand curve: one sample and one decision per second; a replica is ready
    ``startup_s`` after the decision that asked for it (or never, with ``startup_s=None``)."""

    settings: Settings
    demand: Callable[[float], float]
    startup_s: float | None = 2.0
    clock: FakeClock = field(default_factory=FakeClock)
    desired: int = 1
    ready_at: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    state: State = field(default_factory=State)
    history: list[tuple[float, int]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start = self.clock.now()
        self.ready_at = [self.start] * self.desired

    def step(self) -> Decision:
        now = self.clock.now()
        self.samples.append(Sample(now, self.demand(now - self.start)))
        self.samples = [s for s in self.samples if s.at_s > now - 120]
        ready = sum(1 for t in self.ready_at if t <= now)
        decision = decide("api", self.settings, self.samples, Replicas(self.desired, ready, len(self.ready_at) - ready),
                          self.state, now)
        self.state = decision.state
        if decision.desired > self.desired:
            due = now + self.startup_s if self.startup_s is not None else float("inf")
            self.ready_at += [due] * (decision.desired - self.desired)
        elif decision.desired < self.desired:
            self.ready_at = sorted(self.ready_at)[: decision.desired]
        if decision.desired != self.desired:
            self.history.append((now - self.start, decision.desired))
        self.desired = decision.desired
        self.decisions.append(decision)
        return decision

    def run_for(self, seconds: float) -> None:
        for _ in range(int(seconds / INTERVAL_S)):
            self.step()
            self.clock.advance(INTERVAL_S)

    def flaps(self) -> int:
        counts = [1] + [n for _, n in self.history]
        directions = [b > a for a, b in zip(counts, counts[1:], strict=False) if a != b]
        return sum(1 for a, b in zip(directions, directions[1:], strict=False) if a != b)


SETTINGS = Settings(min=1, max=20, target=4.0)


def test_settings_come_from_the_spec_with_kpa_defaults() -> None:
    settings = Settings.from_spec(AutoscaleSpec())
    assert (settings.stable_window_s, settings.panic_window_s, settings.panic_threshold) == (60.0, 6.0, 2.0)
    assert (settings.interval_s, settings.max_scale_up_rate, settings.max_scale_down_rate) == (1.0, 10.0, 2.0)
    assert settings == Settings(max=4)


def test_a_5x_step_panics_at_the_first_decision_and_reaches_demand_within_the_panic_window() -> None:
    run = Run(SETTINGS, lambda t: 4.0 if t < 10 else 20.0)
    run.run_for(10)
    assert run.desired == 1 and not run.history
    run.run_for(1)
    assert run.history == [(10.0, 2)]  # the first decision after the step
    assert run.decisions[-1].reason == ("scaled api 1→2: in-flight 5.5 over the 60 s stable window, "
                                        "target 4 per replica")
    run.run_for(1)
    assert run.decisions[-1].panic and run.decisions[-1].reason == (
        "scaled api 2→3: in-flight 9.3 over the 6 s panic window, target 4 per replica, 1 starting")
    run.run_for(5)
    assert run.desired == 5, run.history  # 20 in flight / 4 per replica once the panic window is full
    run.run_for(60)
    assert run.desired == 5 and max(n for _, n in run.history) == 5  # starting replicas counted: no overshoot


def test_after_the_load_stops_it_holds_while_panicking_then_follows_the_stable_average_down_at_the_max_rate() -> None:
    run = Run(SETTINGS, lambda t: 20.0 if t < 30 else 1.0)
    run.run_for(30)
    assert run.desired == 5
    run.run_for(30)
    assert run.desired == 5 and run.decisions[-1].panic  # no scale-down for a stable window after the last burst
    run.run_for(40)
    assert run.desired == 1, run.history  # then the stable average, not a second window of the panic's count
    downs = [n for _, n in run.history][1:]
    assert downs == sorted(downs, reverse=True) and all(b >= a // 2 for a, b in zip([5, *downs], downs, strict=False))


def test_scale_down_stabilisation_keeps_the_highest_recommendation_of_its_window() -> None:
    held = Run(Settings(min=1, max=20, target=4.0, scale_down_stabilization_s=60), lambda t: 20.0 if t < 30 else 1.0)
    held.run_for(89)
    assert held.desired == 5  # the last recommendation of 5 (at t=29) is inside the 60 s window
    held.run_for(80)
    assert held.desired == 1  # once a whole window of recommendations asks for 1
    assert "scale-down stabilised: highest over 60 s" in " ".join(d.reason for d in held.decisions)


def test_a_ramp_follows_demand_in_steps_without_going_down() -> None:
    run = Run(SETTINGS, lambda t: 0.5 * t)  # +2 replicas' worth every 16 s
    run.run_for(120)
    counts = [n for _, n in run.history]
    assert counts == sorted(counts) and 12 <= run.desired <= 16, run.history


def test_a_short_spike_scales_up_but_does_not_flap() -> None:
    run = Run(SETTINGS, lambda t: 40.0 if 20 <= t < 23 else 3.0)
    run.run_for(80)
    assert max(n for _, n in run.history) == 6 and run.desired == 6  # no scale-down for a stable window
    run.run_for(120)
    assert run.desired == 1 and run.flaps() == 1  # up, then down: one change of direction


def test_noise_of_20_percent_around_the_target_adds_headroom_at_most_once_and_never_flaps() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        run = Run(SETTINGS, lambda t: 12.0 * rng.uniform(0.8, 1.2))  # 3 replicas' worth at exactly the target
        run.desired, run.ready_at = 3, [run.start] * 3
        run.run_for(600)
        assert run.flaps() == 0 and [n for _, n in run.history] in ([], [4]), run.history
        # a load just over the target is not left waiting for a band; the way down needs 10 % headroom
        assert run.desired in (3, 4)


def test_below_the_target_noise_never_changes_the_count() -> None:
    rng = random.Random(7)
    run = Run(SETTINGS, lambda t: 10.0 * rng.uniform(0.8, 1.2))  # 2.5 replicas' worth: 83 % of 3
    run.desired, run.ready_at = 3, [run.start] * 3
    run.run_for(600)
    assert run.history == [] and "kept api at 3" in run.decisions[-1].reason


def test_noise_with_a_trend_changes_direction_zero_times() -> None:
    rng = random.Random(11)
    run = Run(SETTINGS, lambda t: (8.0 if t < 120 else 24.0) * rng.uniform(0.8, 1.2))
    run.run_for(300)
    assert run.flaps() == 0 and run.desired in (6, 7), run.history


def test_no_sample_holds_the_count_and_says_so() -> None:
    clock = FakeClock()
    decision = decide("api", SETTINGS, [], Replicas(3, 3, 0), State(), clock.now())
    assert decision.held and decision.desired == 3 and decision.reason == "held api at 3: no in-flight sample yet"


def test_a_stale_sample_holds_never_down_and_never_to_zero() -> None:
    clock = FakeClock()
    samples = [Sample(clock.now(), 0.0)]
    clock.advance(10)
    decision = decide("api", SETTINGS, samples, Replicas(4, 4, 0), State(), clock.now())
    assert decision.held and decision.desired == 4
    assert "the newest in-flight sample is 10.0 s old (stale after 3 s)" in decision.reason
    zero = Settings(min=0, max=4, scale_to_zero_after_s=5)
    idle_long_ago = clock.now() - 60
    stale = decide("api", zero, samples, Replicas(1, 1, 0), State(), clock.now(), idle_since_s=idle_long_ago)
    assert stale.held and stale.desired == 1  # idle, but the data is stale: never to zero on it
    at_zero = decide("api", zero, samples, Replicas(0, 0, 0), State(), clock.now(), idle_since_s=idle_long_ago)
    assert at_zero.held and at_zero.desired == 0  # held where it is: the gateway's activator wakes it
    fresh = [Sample(clock.now(), 0.0)]
    assert decide("api", zero, fresh, Replicas(1, 1, 0), State(), clock.now()).desired == 1  # min 0, not idle: 1


def test_a_replica_that_never_becomes_ready_is_not_asked_for_again_and_again() -> None:
    run = Run(SETTINGS, lambda t: 12.0, startup_s=None)
    run.run_for(300)
    assert run.desired == 3 and len(run.history) == 1, run.history
    assert "2 starting" in run.decisions[-1].reason


def test_bounds_max_and_min_and_the_up_rate() -> None:
    clock = FakeClock()
    bounded = Settings(min=2, max=4, target=1.0)
    now = clock.now()
    high = decide("api", bounded, [Sample(now, 100.0)], Replicas(2, 2, 0), State(), now)
    assert high.desired == 4 and "max 4" in high.reason
    low = decide("api", bounded, [Sample(now, 0.0)], Replicas(2, 2, 0), State(), now)
    assert low.desired == 2
    rated = decide("api", Settings(max=100, target=1.0, max_scale_up_rate=3), [Sample(now, 50.0)],
                   Replicas(2, 2, 0), State(), now)
    assert rated.desired == 6 and "max_scale_up_rate 3x of 2 ready" in rated.reason


def test_scale_up_stabilisation_waits_for_the_lowest_recommendation() -> None:
    settings = Settings(max=20, target=4.0, scale_up_stabilization_s=5, panic_threshold=100)
    run = Run(settings, lambda t: 4.0 if t < 10 else 12.0, startup_s=0)
    run.run_for(12)
    assert run.desired == 1
    run.run_for(70)
    assert run.desired == 3


def test_latency_sizes_in_proportion_to_ready_replicas() -> None:
    clock = FakeClock()
    settings = Settings(metric="latency_p95_ms", target=100.0, max=10, stable_window_s=6, panic_window_s=6)
    now = clock.now()
    decision = decide("api", settings, [Sample(now, 300.0)], Replicas(2, 2, 0), State(), now)
    assert decision.desired == 6 and "p95 latency ms 300.0" in decision.reason


def test_min_0_scales_an_idle_service_to_zero_after_its_grace_period_and_wakes_on_activity() -> None:
    clock = FakeClock()
    settings = Settings(min=0, max=8, target=4.0, scale_to_zero_after_s=30)
    last_request = clock.now()
    samples: list[Sample] = []
    state, desired, downs = State(), 2, []
    for _ in range(40):  # no request, nothing in flight
        clock.advance(1)
        now = clock.now()
        samples.append(Sample(now, 0.0))
        decision = decide("api", settings, samples, Replicas(desired, desired, 0), state, now, idle_since_s=last_request)
        state = decision.state
        if decision.desired != desired:
            downs.append((now - last_request, decision.desired))
        desired = decision.desired
    assert downs[-1] == (30.0, 0), downs  # to zero exactly after the grace period, not before
    assert all(n >= 1 for _, n in downs[:-1])
    assert decision.reason == ("kept api at 0: no request for 40 s (scale_to_zero_after_s 30); the gateway holds "
                               "the next one and wakes it")
    # a request arrives: the shell reports activity (idle_since None), and demand sizes the wake-up
    clock.advance(1)
    now = clock.now()
    woken = decide("api", settings, [*samples, Sample(now, 0.0)], Replicas(0, 0, 0), state, now)
    assert woken.desired == 1 and "min 0, requests arriving" in woken.reason
    burst = decide("api", settings, [*samples, Sample(now, 20.0)], Replicas(0, 0, 0), state, now)
    assert burst.desired == 5 and burst.panic, burst.reason  # 20 held requests / 4 per replica


def test_min_0_without_an_activator_or_a_quiet_spell_keeps_one_replica() -> None:
    clock = FakeClock()
    settings = Settings(min=0, max=4, scale_to_zero_after_s=10)
    samples = [Sample(clock.now() + t, 0.0) for t in range(120)]
    clock.advance(119)
    never = decide("api", settings, samples, Replicas(1, 1, 0), State(), clock.now(), idle_since_s=None)
    assert never.desired == 1
    recent = decide("api", settings, samples, Replicas(1, 1, 0), State(), clock.now(), idle_since_s=clock.now() - 9)
    assert recent.desired == 1 and "not idle for scale_to_zero_after_s" in recent.reason
