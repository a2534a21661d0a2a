"""The autoscaling policy: how many replicas a service wants, from recent samples of its metric.

A pure function of plain data and ``now``. The semantics are Knative KPA's,
with HPA's stabilisation windows on top:

* two windows over the samples: the **stable** window (60 s) and the
  **panic** window (6 s). The stable average sizes the service; when the
  panic-window average asks for ``panic_threshold`` (2x) the ready replicas or
  more, the service **panics**: it sizes from the panic window and never
  scales down, until a whole stable window passed since the last burst;
* a **tolerance** band (10 %) on the way down: a scale-down sizes for
  ``target × (1 - tolerance)``, a hysteresis against flapping; a scale-up
  happens as soon as demand asks for more (no band to cross while overloaded);
* **stabilisation**: scaling up takes the lowest recommendation of the last
  ``scale_up_stabilization_s``; scaling down the highest of the last
  ``scale_down_stabilization_s`` (HPA's behaviour; 0 by default, as KPA's
  scale-down delay). The windows hold recommendations, not counts a panic
  kept;
* **rates**: one decision adds at most ``max_scale_up_rate`` times the ready
  replicas and removes at most all but ``1 / max_scale_down_rate`` of them;
* ``min``/``max``; below 1 only with ``min: 0`` and only for an **idle**
  service: no request at the gateway for ``scale_to_zero_after_s`` (the shell
  says since when, ``idle_since_s``; None: not idle, or no activator to wake
  it). Going to zero skips the rates and stabilisation (nothing is served);
  at zero, any activity asks for at least 1 again;
* capacity on the way: the size is demand over target, so replicas that are
  starting (or never become ready) are not asked for again and again;
* missing or stale samples **hold** the count: never down, never to zero.

The metric is a service total for ``inflight``, ``rps`` and ``cpu`` (so the
count is ``total / target``) and the measured value for ``latency_p95_ms``
(so the count is ``ready * value / target``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lichen.spec.models import AutoscaleSpec

ADDITIVE = ("inflight", "rps", "cpu")
"""metrics whose service total divides by the per-replica target"""
STALE_AFTER_INTERVALS = 3
"""a newest sample older than this many intervals (at least 3 s) is stale"""
LABELS = {"inflight": "in-flight", "rps": "requests/s", "cpu": "CPU cores", "latency_p95_ms": "p95 latency ms"}


@dataclass(frozen=True)
class Settings:
    """What the policy reads of ``services.<name>.autoscale``."""

    min: int = 1
    max: int = 4
    metric: str = "inflight"
    target: float = 4.0
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 0.0
    interval_s: float = 1.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 10.0
    max_scale_down_rate: float = 2.0
    tolerance: float = 0.1
    scale_to_zero_after_s: float = 30.0

    @classmethod
    def from_spec(cls, spec: AutoscaleSpec) -> Settings:
        return cls(**{name: getattr(spec, name) for name in cls.__dataclass_fields__})

    @property
    def stale_after_s(self) -> float:
        return max(3.0, STALE_AFTER_INTERVALS * self.interval_s)

    def floor(self, idle_s: float | None) -> int:
        """The fewest replicas kept: ``min``; with ``min: 0``, 1 until the service was idle for
        ``scale_to_zero_after_s``."""
        if self.min > 0:
            return self.min
        return 0 if idle_s is not None and idle_s >= self.scale_to_zero_after_s else 1


@dataclass(frozen=True)
class Sample:
    at_s: float
    """monotonic seconds"""
    value: float


@dataclass(frozen=True)
class Replicas:
    desired: int
    """the count the service wants now"""
    ready: int
    starting: int
    """started, not ready yet: capacity on the way"""


@dataclass(frozen=True)
class State:
    """The policy's memory between decisions."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, raw recommendation) within the longer stabilisation window"""
    panic_since_s: float | None = None
    """when the current panic began (None: not panicking)"""
    last_burst_s: float | None = None
    """the last decision whose panic window crossed the threshold"""
    zero_at_s: float | None = None
    """the last decision that found (or left) the service at zero: both windows start there, as samples
    taken with no replica say nothing about the demand for one (a burst held at the gateway sizes at once)"""


@dataclass(frozen=True)
class Decision:
    desired: int
    state: State
    reason: str
    panic: bool = False
    held: bool = False
    """no usable sample: the count was kept"""
    value: float | None = None
    """the metric value the decision was sized on"""
    window_s: float | None = None
    limits: tuple[str, ...] = field(default=())
    """which bounds cut the recommendation (rate, stabilisation, min/max)"""

    def changed(self, before: int) -> bool:
        return self.desired != before


def _mean(samples: Sequence[Sample]) -> float:
    return sum(s.value for s in samples) / len(samples)


def _raw(settings: Settings, value: float, ready: int) -> float:
    """Replicas the value asks for, unrounded."""
    if settings.metric in ADDITIVE:
        return value / settings.target
    return max(ready, 1) * value / settings.target


def decide(service: str, settings: Settings, samples: Sequence[Sample], replicas: Replicas, state: State,
           now: float, idle_since_s: float | None = None) -> Decision:
    """The desired replica count of ``service`` at ``now``, with the reason, and the policy's next state.

    ``idle_since_s``: since when the service has had no request (None: it has now, or it cannot be woken
    from zero); only ``min: 0`` reads it.
    """
    current = replicas.desired
    idle_s = None if idle_since_s is None else max(0.0, now - idle_since_s)
    label = LABELS.get(settings.metric, settings.metric)
    keep_s = max(settings.stable_window_s, settings.scale_up_stabilization_s, settings.scale_down_stabilization_s)
    history = tuple((t, n) for t, n in state.recommendations if t > now - keep_s)
    since = now if current == 0 else state.zero_at_s
    recent = [s for s in samples if now - settings.stable_window_s < s.at_s <= now
              and (since is None or s.at_s >= since)]
    newest = max((s.at_s for s in samples if s.at_s <= now), default=None)
    if newest is None or now - newest > settings.stale_after_s:
        held = max(current, settings.min)
        why = (f"no {label} sample yet" if newest is None
               else f"the newest {label} sample is {now - newest:.1f} s old (stale after {settings.stale_after_s:g} s)")
        verb = f"held {service} at {held}" if held == current else f"scaled {service} {current}→{held}"
        return Decision(held, State(history, state.panic_since_s, state.last_burst_s, since), f"{verb}: {why}",
                        held=True)

    ready = replicas.ready
    recent = recent or [max((s for s in samples if s.at_s <= now), key=lambda s: s.at_s)]
    stable_value = _mean(recent)
    panic_recent = [s for s in recent if s.at_s > now - settings.panic_window_s] or recent[-1:]
    panic_value = _mean(panic_recent)
    stable_raw, panic_raw = _raw(settings, stable_value, ready), _raw(settings, panic_value, ready)
    stable_want, panic_want = math.ceil(stable_raw - 1e-9), math.ceil(panic_raw - 1e-9)

    burst = panic_raw >= settings.panic_threshold * max(ready, 1) and panic_want > current
    last_burst = now if burst else state.last_burst_s
    panicking = burst or (state.panic_since_s is not None and last_burst is not None
                          and now - last_burst < settings.stable_window_s)
    panic_since = (state.panic_since_s if state.panic_since_s is not None else now) if panicking else None
    if panicking:  # the count never goes down while panicking; the history keeps what the metric asked for
        value, window, recommended = panic_value, settings.panic_window_s, panic_want
        want = max(panic_want, current)
    else:
        value, window, want = stable_value, settings.stable_window_s, stable_want
        if want < current:
            # the tolerance band, on the way down only: a smaller count must leave `tolerance` headroom, so
            # the count keeps a hysteresis (noise around a boundary does not flap it) while a load over the
            # target never waits for a band to be crossed
            want = min(current, math.ceil(stable_raw / (1 - settings.tolerance) - 1e-9))
        recommended = want
    # the stabilisation windows look back over recommendations, not over counts a panic held: a burst's
    # overshoot is not kept for a stabilisation window more once the panic is over
    history = (*history, (now, recommended))
    floor = settings.floor(idle_s)
    if floor == 0 and not panicking:
        verb = f"scaled {service} {current}→0" if current else f"kept {service} at 0"
        reason = (f"{verb}: no request for {idle_s:.0f} s (scale_to_zero_after_s {settings.scale_to_zero_after_s:g}); "
                  "the gateway holds the next one and wakes it")
        return Decision(0, State(history, None, last_burst, now), reason, value=value, window_s=window)
    limits: list[str] = []
    desired = want
    if desired > current:
        up_window = [n for t, n in history if t > now - settings.scale_up_stabilization_s] or [want]
        if min(up_window) < desired:
            desired = max(current, min(up_window))
            limits.append(f"scale-up stabilised: lowest over {settings.scale_up_stabilization_s:g} s is {desired}")
        ceiling = max(current, math.ceil(settings.max_scale_up_rate * max(ready, 1)))
        if desired > ceiling:
            desired = ceiling
            limits.append(f"max_scale_up_rate {settings.max_scale_up_rate:g}x of {ready} ready")
    elif desired < current:
        down_window = [n for t, n in history if t > now - settings.scale_down_stabilization_s] or [want]
        if max(down_window) > desired:
            desired = min(current, max(down_window))
            limits.append(f"scale-down stabilised: highest over {settings.scale_down_stabilization_s:g} s is "
                          f"{desired}")
        lowest = math.floor(current / settings.max_scale_down_rate)
        if desired < lowest:
            desired = lowest
            limits.append(f"max_scale_down_rate {settings.max_scale_down_rate:g}")
    if desired > settings.max:
        desired = settings.max
        limits.append(f"max {settings.max}")
    if desired < max(floor, 1):
        desired = max(floor, 1)
        limits.append(f"min {settings.min}" if settings.min else
                      "min 0, not idle for scale_to_zero_after_s" if idle_s is not None else "min 0, requests arriving")

    per = f"target {settings.target:g} per replica"
    if settings.metric == "latency_p95_ms":
        per = f"target {settings.target:g} ms with {ready} ready"
    verb = f"scaled {service} {current}→{desired}" if desired != current else f"kept {service} at {desired}"
    mode = "panic" if panicking else "stable"
    reason = f"{verb}: {label} {value:.1f} over the {window:g} s {mode} window, {per}"
    if replicas.starting:
        reason += f", {replicas.starting} starting"
    if limits:
        reason += f" ({'; '.join(limits)})"
    return Decision(desired, State(history, panic_since, last_burst, since), reason, panic=panicking, value=value,
                    window_s=window, limits=tuple(limits))
