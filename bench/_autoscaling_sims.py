"""The pure half of bench/autoscaling.py: load traces, a queue simulator and four autoscaling policies.

No I/O and no clock: everything here is a function of its arguments, so
tests/unit/bench/test_autoscaling_sims.py runs it on plain data.

* **Traces** (:func:`build_trace`): an arrival rate per ``DT_S`` step, and
  :func:`poisson_arrivals` turns one into Poisson arrival times (a
  non-homogeneous Poisson process, by time rescaling), the schedule both the
  real run and the simulations replay.
* **Simulator** (:class:`Sim`): a fluid FIFO queue in steps of ``DT_S``. Every
  ready replica serves ``concurrency`` requests at a time, ``service_s`` each;
  the rest wait in one queue; a request that would wait past ``timeout_s`` is
  dropped. A replica asked for is ready ``startup_s`` later (the startup
  measured for Lichen in the same run); a removed one goes at once (starting
  ones first). Latency = queue wait + ``service_s``.
* **Policies**, each stepped at the end of every simulated step, each with its
  project's defaults (sources cited beside each constant): :class:`HpaPolicy`
  (Kubernetes HPA), :class:`KpaPolicy` (Knative KPA), :class:`RayPolicy` (Ray
  Serve) and :class:`LichenPolicy`, which calls Lichen's own pure
  ``lichen.control.autoscaling.decide``.
* **Figures** (:func:`figures`): the same numbers for a simulated and a real
  run: first decision, time to capacity, seconds over the SLO, failed or
  dropped requests, replica-seconds and flaps.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lichen.control import autoscaling

DT_S = 0.05
"""simulation step (= the bench's default service time, so a replica serves ``concurrency`` per step)"""
EPS = 1e-9


@dataclass(frozen=True)
class Service:
    concurrency: int = 4
    """requests one replica serves at a time (C)"""
    service_s: float = 0.05
    """seconds per request (S)"""
    timeout_s: float = 30.0
    """a request waiting longer is dropped (the gateway's and the endpoint's timeout)"""
    slo_s: float = 0.2
    """a second whose p95 is above this (or with a failed request) violates the SLO"""

    @property
    def capacity_per_s(self) -> float:
        """requests per second one replica serves"""
        return self.concurrency / self.service_s


# ------------------------------------------------------------------------------------------------ traces
@dataclass(frozen=True)
class Trace:
    name: str
    rates_per_s: tuple[float, ...]
    """arrival rate of each DT_S step"""
    event_s: float | None
    """when the load changes (the step, the spike, the ramp); None: no event (noise)"""
    event_rate_per_s: float | None
    """the rate the capacity must reach after the event (None: not measured)"""
    description: str
    flaps_from_s: float = 0.0
    """flaps are counted among the decisions from here on (noise: after its ramp)"""

    @property
    def duration_s(self) -> float:
        return len(self.rates_per_s) * DT_S

    def rate_at(self, t_s: float) -> float:
        k = min(max(int(t_s / DT_S), 0), len(self.rates_per_s) - 1)
        return self.rates_per_s[k]


TRACES = ("step", "spike", "diurnal", "noise")
# phase lengths in seconds: (full, quick)
_LENGTHS_S = {
    "step": ((20, 60, 90), (10, 25, 35)),  # base, 5x, base
    "spike": ((20, 10, 40), (10, 5, 20)),  # base, 5x, base
    "diurnal": ((10, 150), (5, 60)),  # base, a raised cosine base -> 5x -> base
    "noise": ((30, 120), (15, 30)),  # a ramp base -> 5x base, then 5x base with +-20 % noise
}


def build_trace(name: str, capacity_per_s: float, quick: bool = False, seed: int = 1) -> Trace:
    """Trace ``name`` with a base load of half a replica's capacity (in flight: half the target) and a peak
    of five times that: 2.5 replicas' worth, which sizes to 3 replicas at 83 % of their capacity."""
    base = 0.5 * capacity_per_s
    peak = 5 * base
    lengths = _LENGTHS_S[name][1 if quick else 0]
    rates: list[float] = []

    def hold(seconds: float, rate: float) -> None:
        rates.extend([rate] * round(seconds / DT_S))

    if name in ("step", "spike"):
        hold(lengths[0], base)
        hold(lengths[1], peak)
        hold(lengths[2], base)
        kind = "5x step up and back down" if name == "step" else f"a {lengths[1]} s spike of 5x"
        return Trace(name, tuple(rates), lengths[0], peak, f"{kind}: {base:g} -> {peak:g} -> {base:g} req/s")
    if name == "diurnal":
        hold(lengths[0], base)
        steps = round(lengths[1] / DT_S)
        rates.extend(base + (peak - base) * (1 - math.cos(2 * math.pi * k / steps)) / 2 for k in range(steps))
        return Trace(name, tuple(rates), lengths[0], None,
                     f"a smooth day: {base:g} -> {peak:g} -> {base:g} req/s over {lengths[1]} s")
    if name == "noise":
        steps = round(lengths[0] / DT_S)
        rates.extend(base + (peak - base) * k / steps for k in range(steps))
        rng = random.Random(seed)
        for _ in range(round(lengths[1])):
            hold(1.0, peak * rng.uniform(0.8, 1.2))  # a new level every second
        return Trace(name, tuple(rates), None, None,
                     f"a {lengths[0]} s ramp to {peak:g} req/s, then {peak:g} req/s +-20 % for {lengths[1]} s (a new "
                     "level every second; flaps counted after the ramp)", flaps_from_s=lengths[0])
    raise ValueError(f"unknown trace {name!r}; one of {', '.join(TRACES)}")


def poisson_arrivals(trace: Trace, seed: int = 1) -> list[float]:
    """Arrival times (s) of a Poisson process whose rate follows the trace (time rescaling: unit-rate
    exponential gaps, spent at each step's rate)."""
    rng = random.Random(seed)
    times: list[float] = []
    need = rng.expovariate(1.0)
    for k, rate in enumerate(trace.rates_per_s):
        mass, used = rate * DT_S, 0.0
        while rate > 0 and need <= mass - used:
            used += need
            times.append(k * DT_S + used / rate)
            need = rng.expovariate(1.0)
        need -= mass - used
    return times


def arrivals_per_step(times: Sequence[float], steps: int) -> list[int]:
    counts = [0] * steps
    for t in times:
        counts[min(int(t / DT_S), steps - 1)] += 1
    return counts


# ------------------------------------------------------------------------------------------------ simulator
class Policy(Protocol):
    name: str

    def step(self, sim: Sim) -> int | None:
        """Called at the end of every step; a new desired count, or None to keep it."""


@dataclass
class SimRun:
    """What a simulation (or, filled by the bench, a real run) produced."""

    name: str
    requests: list[tuple[float, float | None, float]] = field(default_factory=list)
    """(sent s, latency s or None when failed/dropped, weight): fluid portions in a simulation"""
    decisions: list[tuple[float, int, int]] = field(default_factory=list)
    """(s, desired before, desired after)"""
    ready: list[tuple[float, int]] = field(default_factory=list)
    """(s, ready replicas) whenever it changed"""
    replica_s: float = 0.0
    """integral of running replicas (starting ones included) over the trace"""
    startup_s: float | None = None


class Sim:
    """The fluid queue under one policy (see the module docstring)."""

    def __init__(self, trace: Trace, arrivals: Sequence[int], service: Service, startup_s: float, policy: Policy,
                 min_replicas: int = 1, max_replicas: int = 8) -> None:
        self.trace, self.arrivals, self.service, self.policy = trace, arrivals, service, policy
        self.startup_s, self.min_replicas, self.max_replicas = startup_s, min_replicas, max_replicas
        self.now_s = 0.0
        self.desired = self.ready = max(1, min_replicas)
        self.pending: list[float] = []  # ready-at times of starting replicas
        self.queue: deque[list[float]] = deque()  # [arrival step, amount]
        self.inflight: list[float] = []  # queued + in service at the end of each step
        self.run = SimRun(policy.name, ready=[(0.0, self.ready)], startup_s=startup_s)

    @property
    def starting(self) -> int:
        return len(self.pending)

    @property
    def inflight_now(self) -> float:
        return self.inflight[-1] if self.inflight else 0.0

    def mean_inflight(self, from_s: float, to_s: float) -> float | None:
        """Mean in-flight over the steps ending in (from_s, to_s]; None before the first step."""
        lo, hi = max(0, round(from_s / DT_S)), min(len(self.inflight), round(to_s / DT_S))
        return sum(self.inflight[lo:hi]) / (hi - lo) if hi > lo else None

    def simulate(self) -> SimRun:
        steps, service = len(self.trace.rates_per_s), self.service
        per_step = service.concurrency * DT_S / service.service_s
        k = 0
        while k < steps or (self.queue and k < steps + service.timeout_s / DT_S + 2):
            t = k * DT_S
            while self.pending and self.pending[0] <= t + EPS:
                self.pending.pop(0)
                self.ready += 1
                self.run.ready.append((t, self.ready))
            if k < steps and self.arrivals[k]:
                self.queue.append([k, float(self.arrivals[k])])
            while self.queue and (k - self.queue[0][0]) * DT_S > service.timeout_s:
                j, amount = self.queue.popleft()
                self.run.requests.append(((j + 0.5) * DT_S, None, amount))
            capacity, served = self.ready * per_step, 0.0
            while capacity > EPS and self.queue:
                head = self.queue[0]
                take = min(capacity, head[1])
                self.run.requests.append(((head[0] + 0.5) * DT_S, (k - head[0]) * DT_S + service.service_s, take))
                head[1] -= take
                capacity -= take
                served += take
                if head[1] <= EPS:
                    self.queue.popleft()
            self.inflight.append(sum(a for _, a in self.queue) + served * service.service_s / DT_S)
            self.now_s = (k + 1) * DT_S
            if k < steps:
                self.run.replica_s += (self.ready + self.starting) * DT_S
                wanted = self.policy.step(self)
                if wanted is not None:
                    self._apply(min(max(wanted, self.min_replicas), self.max_replicas))
            k += 1
        return self.run

    def _apply(self, wanted: int) -> None:
        if wanted == self.desired:
            return
        self.run.decisions.append((self.now_s, self.desired, wanted))
        if wanted > self.desired:
            self.pending.extend([self.now_s + self.startup_s] * (wanted - self.desired))
            self.pending.sort()
        else:
            for _ in range(self.desired - wanted):
                if self.pending:
                    self.pending.pop()  # the one asked for last
                else:
                    self.ready -= 1
            self.run.ready.append((self.now_s, self.ready))
        self.desired = wanted


def _ceil(x: float) -> int:
    return math.ceil(x - EPS)


# ------------------------------------------------------------------------------------------------ Kubernetes HPA
# kubernetes/kubernetes pkg/controller/podautoscaler/config/v1alpha1/defaults.go
#   (RecommendedDefaultHPAControllerConfiguration): sync period 15 s, tolerance 0.1, downscale stabilisation 5 min
# kubernetes/kubernetes pkg/apis/autoscaling/v2/defaults.go: scale-up: stabilisation 0 s, policies
#   {Pods 4 per 15 s, Percent 100 per 15 s}, selectPolicy Max; scale-down: Percent 100 per 15 s
# kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator.go (calcPlainMetricReplicas): tolerance
#   band, pods without metrics count as 0 on a scale-up and as the target on a scale-down
# kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go (stabilizeRecommendationWithBehaviors,
#   convertDesiredReplicasWithBehaviorRate): min over the scale-up window, max over the scale-down window
# metrics-server: values at a 15 s resolution (kubernetes-sigs/metrics-server FAQ.md "How often metrics are
#   scraped?"; the release manifests pass --metric-resolution=15s): the metric here is the mean over the last 15 s
HPA_SYNC_PERIOD_S = 15.0
HPA_TOLERANCE = 0.1
HPA_DOWNSCALE_STABILIZATION_S = 300.0
HPA_UPSCALE_STABILIZATION_S = 0.0
HPA_SCALE_UP_PODS, HPA_SCALE_UP_PERCENT, HPA_SCALE_UP_PERIOD_S = 4, 100, 15.0
HPA_METRIC_RESOLUTION_S = 15.0


class HpaPolicy:
    name = "Kubernetes HPA (sim)"

    def __init__(self, target: float) -> None:
        self.target = target
        self.next_sync_s = HPA_SYNC_PERIOD_S  # the first sync one period in: no decision before it
        self.recommendations: list[tuple[float, int]] = []
        self.scale_ups: list[tuple[float, int]] = []

    def _calculate(self, sim: Sim, mean_total: float) -> int:
        current, ready, missing = sim.desired, sim.ready, sim.starting
        ratio = mean_total / ready / self.target
        if missing == 0:
            return current if abs(1 - ratio) <= HPA_TOLERANCE else _ceil(ratio * ready)
        filled = mean_total + (missing * self.target if ratio < 1 else 0.0)
        new_ratio = filled / (ready + missing) / self.target
        if abs(1 - new_ratio) <= HPA_TOLERANCE or (ratio < 1 < new_ratio) or (ratio > 1 > new_ratio):
            return current
        new = _ceil(new_ratio * (ready + missing))
        if (new_ratio < 1 and new > current) or (new_ratio > 1 and new < current):
            return current
        return new

    def step(self, sim: Sim) -> int | None:
        now = sim.now_s
        if now + EPS < self.next_sync_s:
            return None
        self.next_sync_s += HPA_SYNC_PERIOD_S
        mean_total = sim.mean_inflight(now - HPA_METRIC_RESOLUTION_S, now)
        if mean_total is None or sim.ready == 0:
            return None  # no metrics: the HPA keeps the count
        current = sim.desired
        desired = self._calculate(sim, mean_total)
        keep_s = max(HPA_DOWNSCALE_STABILIZATION_S, HPA_UPSCALE_STABILIZATION_S)
        self.recommendations = [(t, n) for t, n in self.recommendations if t > now - keep_s]
        self.recommendations.append((now, desired))
        up = min([n for t, n in self.recommendations if t > now - HPA_UPSCALE_STABILIZATION_S] or [desired])
        down = max(n for t, n in self.recommendations if t > now - HPA_DOWNSCALE_STABILIZATION_S)
        stabilized = min(max(current, up), down)
        if stabilized > current:
            added = sum(n for t, n in self.scale_ups if t > now - HPA_SCALE_UP_PERIOD_S)
            start = current - added
            limit = max(start + HPA_SCALE_UP_PODS, _ceil(start * (1 + HPA_SCALE_UP_PERCENT / 100)))
            stabilized = min(stabilized, limit)
            self.scale_ups.append((now, stabilized - current))
        # scale-down: Percent 100 per 15 s allows any decrease, down to minReplicas
        return stabilized


# ------------------------------------------------------------------------------------------------ Knative KPA
# knative/serving config/core/configmaps/autoscaler.yaml: stable-window 60s, panic-window-percentage 10.0,
#   panic-threshold-percentage 200.0, max-scale-up-rate 1000.0, max-scale-down-rate 2.0, tick-interval 2s,
#   scale-to-zero-grace-period 30s (unused here: min 1)
# knative/serving pkg/autoscaler/metrics/collector.go: scrapeTickInterval = BucketSize = 1 s; each window is
#   the average of its 1 s buckets
# knative/serving pkg/autoscaler/scaling/autoscaler.go (Scale): ceil(observed / target), rate bounds from the
#   ready pods, panic when desired panic pods / ready >= threshold, no scale-down while panicking, panic ends a
#   stable window after the last tick over the threshold; no tolerance band
KPA_TICK_S = 2.0
KPA_STABLE_WINDOW_S = 60.0
KPA_PANIC_WINDOW_S = KPA_STABLE_WINDOW_S * 10.0 / 100
KPA_PANIC_THRESHOLD = 200.0 / 100
KPA_MAX_SCALE_UP_RATE = 1000.0
KPA_MAX_SCALE_DOWN_RATE = 2.0
KPA_BUCKET_S = 1.0
KPA_SCALE_TO_ZERO_GRACE_S = 30.0


class KpaPolicy:
    name = "Knative KPA (sim)"

    def __init__(self, target: float) -> None:
        self.target = target
        self.buckets: list[tuple[float, float]] = []
        self.next_bucket_s = KPA_BUCKET_S
        self.next_tick_s = KPA_TICK_S
        self.panic_since_s: float | None = None
        self.max_panic_pods = 0

    def step(self, sim: Sim) -> int | None:
        now = sim.now_s
        if now + EPS >= self.next_bucket_s:
            value = sim.mean_inflight(now - KPA_BUCKET_S, now)
            if value is not None:
                self.buckets.append((now, value))
            self.buckets = [(t, v) for t, v in self.buckets if t > now - KPA_STABLE_WINDOW_S]
            self.next_bucket_s += KPA_BUCKET_S
        if now + EPS < self.next_tick_s:
            return None
        self.next_tick_s += KPA_TICK_S
        if not self.buckets:
            return None
        stable = sum(v for _, v in self.buckets) / len(self.buckets)
        panic_values = [v for t, v in self.buckets if t > now - KPA_PANIC_WINDOW_S] or [self.buckets[-1][1]]
        panic = sum(panic_values) / len(panic_values)
        ready = max(1.0, float(sim.ready))
        max_up, max_down = math.ceil(KPA_MAX_SCALE_UP_RATE * ready), math.floor(ready / KPA_MAX_SCALE_DOWN_RATE)
        dspc, dppc = _ceil(stable / self.target), _ceil(panic / self.target)
        stable_pods, panic_pods = min(max(dspc, max_down), max_up), min(max(dppc, max_down), max_up)
        over = dppc / ready >= KPA_PANIC_THRESHOLD
        if over:
            self.panic_since_s = now  # begin, or extend, the panic
        elif self.panic_since_s is not None and self.panic_since_s + KPA_STABLE_WINDOW_S < now:
            self.panic_since_s, self.max_panic_pods = None, 0
        desired = stable_pods
        if self.panic_since_s is not None:
            desired = max(desired, panic_pods)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return desired


# ------------------------------------------------------------------------------------------------ Ray Serve
# ray-project/ray python/ray/serve/config.py (AutoscalingConfig): look_back_period_s 30, upscale_delay_s 30,
#   downscale_delay_s 600, smoothing_factor 1.0, metrics_interval_s 10 (DEFAULT_METRICS_INTERVAL_S)
# ray-project/ray python/ray/serve/_private/constants.py: CONTROL_LOOP_PERIOD_S = 0.1 (later
#   CONTROL_LOOP_INTERVAL_S); DEFAULT_MAX_ONGOING_REQUESTS = 5, DEFAULT_TARGET_ONGOING_REQUESTS = 2
# ray-project/ray python/ray/serve/_private/autoscaling_policy.py (calculate_desired_num_replicas,
#   BasicAutoscalingPolicy): desired = ceil(running * (1 + (ongoing per replica / target - 1) * smoothing)); a
#   change happens only after int(delay / loop period) consecutive loops that want it
# ray-project/ray#20977, #22601: the metric is the requests ongoing *at the replicas* (at most
#   max_ongoing_requests each); requests queued in front of them are not counted
RAY_CONTROL_LOOP_S = 0.1
RAY_LOOK_BACK_PERIOD_S = 30.0
RAY_UPSCALE_DELAY_S = 30.0
RAY_DOWNSCALE_DELAY_S = 600.0
RAY_METRICS_INTERVAL_S = 10.0
RAY_SMOOTHING_FACTOR = 1.0
RAY_MAX_ONGOING_PER_TARGET = 5 / 2
"""max_ongoing_requests / target_ongoing_requests of Ray's defaults: a replica holds 2.5x the target"""


class RayPolicy:
    name = "Ray Serve (sim)"

    def __init__(self, target: float) -> None:
        self.target = target
        self.max_ongoing = _ceil(RAY_MAX_ONGOING_PER_TARGET * target)
        self.reports: list[tuple[float, float]] = []
        self.next_report_s = RAY_METRICS_INTERVAL_S
        self.next_loop_s = RAY_CONTROL_LOOP_S
        self.up_periods = int(RAY_UPSCALE_DELAY_S / RAY_CONTROL_LOOP_S)
        self.down_periods = int(RAY_DOWNSCALE_DELAY_S / RAY_CONTROL_LOOP_S)
        self.counter = 0

    def step(self, sim: Sim) -> int | None:
        now = sim.now_s
        if now + EPS >= self.next_report_s:  # replicas report what they hold: queued requests are invisible
            self.reports.append((now, min(sim.inflight_now, self.max_ongoing * sim.ready)))
            self.next_report_s += RAY_METRICS_INTERVAL_S
        if now + EPS < self.next_loop_s:
            return None
        self.next_loop_s += RAY_CONTROL_LOOP_S
        recent = [v for t, v in self.reports if t > now - RAY_LOOK_BACK_PERIOD_S]
        if not recent or sim.ready == 0:
            return None
        running = sim.ready
        error_ratio = sum(recent) / len(recent) / running / self.target
        wanted = _ceil(running * (1 + (error_ratio - 1) * RAY_SMOOTHING_FACTOR))
        current = sim.desired
        if wanted > current:
            self.counter = max(self.counter, 0) + 1
            if self.counter > self.up_periods:
                self.counter = 0
                return wanted
        elif wanted < current:
            self.counter = min(self.counter, 0) - 1
            if self.counter < -self.down_periods:
                self.counter = 0
                return wanted
        else:
            self.counter = 0
        return None


# ------------------------------------------------------------------------------------------------ Lichen
class LichenPolicy:
    """Lichen's own pure policy, sampled and called every ``interval_s`` as the controller does."""

    name = "Lichen policy (sim)"

    def __init__(self, settings: autoscaling.Settings) -> None:
        self.settings = settings
        self.samples: list[autoscaling.Sample] = []
        self.state = autoscaling.State()
        self.next_s = settings.interval_s

    def step(self, sim: Sim) -> int | None:
        now = sim.now_s
        if now + EPS < self.next_s:
            return None
        self.next_s += self.settings.interval_s
        self.samples = [s for s in self.samples if s.at_s > now - 600]
        self.samples.append(autoscaling.Sample(now, sim.inflight_now))
        replicas = autoscaling.Replicas(sim.desired, sim.ready, sim.starting)
        decision = autoscaling.decide("work", self.settings, self.samples, replicas, self.state, now)
        self.state = decision.state
        return decision.desired


def peers(target: float, max_replicas: int) -> list[Policy]:
    """The four simulated policies, same target and bounds."""
    settings = autoscaling.Settings(min=1, max=max_replicas, metric="inflight", target=target)
    return [LichenPolicy(settings), HpaPolicy(target), KpaPolicy(target), RayPolicy(target)]


def simulate_all(trace: Trace, arrivals: Sequence[int], service: Service, startup_s: float,
                 max_replicas: int = 8) -> list[SimRun]:
    return [Sim(trace, arrivals, service, startup_s, p, 1, max_replicas).simulate()
            for p in peers(service.concurrency, max_replicas)]


# ------------------------------------------------------------------------------------------------ figures
def _weighted_quantile(values: list[tuple[float, float]], q: float) -> float:
    """(value, weight) pairs; the smallest value with at least q of the weight at or below it."""
    values.sort()
    total = sum(w for _, w in values)
    running = 0.0
    for value, weight in values:
        running += weight
        if running >= q * total - EPS:
            return value
    return values[-1][0]


def flaps(decisions: Sequence[tuple[float, int, int]]) -> int:
    """Changes of direction of the desired count."""
    signs = [1 if after > before else -1 for _, before, after in decisions if after != before]
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


def figures(run: SimRun, trace: Trace, service: Service) -> dict[str, float | int | None]:
    """The bench's figures for one run, simulated or real."""
    duration = trace.duration_s
    event = trace.event_s
    first = next((t - event for t, before, after in run.decisions if event is not None and t >= event
                  and after > before), None)
    times = [t for t, _ in run.ready]

    def ready_at(t: float) -> int:
        i = bisect.bisect_right(times, t + EPS) - 1
        return run.ready[max(i, 0)][1]

    to_capacity = None
    if event is not None and trace.event_rate_per_s is not None:
        changes = [event] + [t for t in times if event < t < duration]
        to_capacity = next((t - event for t in changes
                            if ready_at(t) * service.capacity_per_s >= trace.event_rate_per_s - EPS), None)
    under_s = sum(DT_S for k, rate in enumerate(trace.rates_per_s)
                  if ready_at(k * DT_S) * service.capacity_per_s < rate - EPS)
    per_second: dict[int, list[tuple[float, float]]] = {}
    failed_weight: dict[int, float] = {}
    failed = 0.0
    for sent, latency, weight in run.requests:
        if sent >= duration:
            continue
        second = int(sent)
        per_second.setdefault(second, []).append((math.inf if latency is None else latency, weight))
        if latency is None:
            failed += weight
            failed_weight[second] = failed_weight.get(second, 0.0) + weight
    over = sum(1 for s, values in per_second.items()
               if failed_weight.get(s, 0.0) >= 0.5 or _weighted_quantile(values, 0.95) > service.slo_s + EPS)
    served = [(lat, w) for _, lat, w in run.requests if lat is not None]
    return {
        "first_decision_s": None if first is None else round(first, 2),
        "time_to_capacity_s": None if to_capacity is None else round(to_capacity, 2),
        "under_capacity_s": round(under_s, 1),
        "slo_violation_s": over,
        "failed_or_dropped": round(failed),
        "requests": round(sum(w for _, _, w in run.requests)),
        "p95_ms": round(_weighted_quantile(served, 0.95) * 1000, 1) if served else None,
        "replica_s": round(run.replica_s, 1),
        "flaps": flaps([d for d in run.decisions if trace.flaps_from_s <= d[0] < duration]),
        "decisions": len([d for d in run.decisions if d[0] < duration]),
        "max_desired": max([after for _, _, after in run.decisions] or [1]),
    }
