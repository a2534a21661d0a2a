"""``lichen advise``'s recommendations: right-size a service from what it used, as the Kubernetes VPA does.

:func:`advise` takes one service's observed usage over a window (plain samples) and its settings, and
returns the changes it recommends, each with its reason, and the expected energy and carbon change.

* **``resources.cpu``** (a limit here, enforced by ``cpu.max`` or affinity, and a reservation): the
  95th percentile of each replica's per-step CPU use plus a 15 % margin (VPA's ``recommendation-margin-
  fraction``), rounded up to 0.05 cores, at least 0.05. VPA's *target* is the 90th percentile of a
  *request*; Lichen's value is also the ceiling a replica is throttled at, so it takes VPA's upper
  percentile. A replica whose 95th percentile reached 90 % of its limit was throttled and its real demand
  is unknown: the limit grows by half.
* **``resources.memory``**: the peak of the limited quantity (the working set under cgroups, the data
  segment under ``RLIMIT_DATA``) plus 15 %, rounded up to 16 MiB, at least 64 MiB. Memory cannot be
  throttled, so VPA's peak-based rule; a peak within 90 % of the limit grows it by a fifth (VPA's OOM bump).
* **``replicas``** (no ``autoscale:``): enough replicas that the 95th percentile of the service's in-flight
  requests is 70 % of their ``max_concurrency`` (Knative's target utilisation of a hard concurrency
  limit), never fewer than the spec's count or 2, whichever is smaller (fewer replicas trade away
  availability, which usage cannot measure). Load that swings (peak ≥ 2× the median need) gets a note
  with an ``autoscale:`` block to consider; it is not applied (it changes behaviour, not size).
* **``autoscale``**: ``max`` grows by half when the autoscaler asked for it during the window;
  ``resources.cpu`` never goes below a ``cpu`` target (it is in cores and must stay at or below the limit).
  A service with no in-flight samples keeps its replicas (a note says so).

A change within ±20 % of the current value is not recommended (VPA's updater leaves pods inside their
bounds alone too), except a throttled or near-limit one. Fewer than ``min_samples`` samples give no advice.

**Energy and carbon.** Lichen attributes energy by use, not reservation, so resizing alone saves no
energy: a replica fewer saves its draw at rest (its 10th-percentile CPU × the service's measured CPU joules per
CPU-second, the window's energy less its memory's modelled share, plus its median resident memory at the power
model's 0.375 W/GB), priced at the window's measured gCO₂e per joule. Embodied carbon is shared by reserved cores,
so the change in reserved cores moves the service's embodied share at the window's rate per core-second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lichen.control.energy_accounting import MEMORY_W_PER_GB
from lichen.spec.quantities import format_memory_bytes

MIB = 1024 ** 2
GB = 1024 ** 3
DAY_S = 86400.0
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Policy:
    margin: float = 0.15
    cpu_percentile: float = 95.0
    cpu_step: float = 0.05
    memory_step_bytes: int = 16 * MIB
    memory_min_bytes: int = 64 * MIB
    saturated_share: float = 0.9
    cpu_bump: float = 1.5
    memory_bump: float = 1.2
    concurrency_utilisation: float = 0.7
    availability_floor: int = 2
    tolerance: float = 0.2
    min_samples: int = 10
    max_growth: float = 1.5


@dataclass(frozen=True)
class Settings:
    """What ``lichen.yaml`` says of the service now."""

    replicas: int
    cpu: float | None = None
    memory_bytes: int | None = None
    max_concurrency: int = 64
    autoscale: dict[str, Any] | None = None
    """``min``, ``max``, ``metric`` and ``target`` when the service autoscales"""


@dataclass(frozen=True)
class Usage:
    """What the service used over ``window_s``."""

    window_s: float
    cpu_cores: Sequence[float] = ()
    """each replica's mean CPU use per step, in cores (one value per replica per step)"""
    memory_bytes: Sequence[float] = ()
    """each replica's samples of the quantity its memory limit counts"""
    inflight: Sequence[float] = ()
    """the service's in-flight requests, one value per scrape"""
    desired_replicas: Sequence[float] = ()
    """what the autoscaler asked for, one value per scrape"""
    resident_bytes: float = 0.0
    """a replica's median working set (whatever the limit counts): the memory it draws power for"""
    cpu_s: float = 0.0
    energy_j: float | None = None
    carbon_g: float | None = None
    embodied_g: float | None = None
    mean_replicas: float = 0.0


@dataclass(frozen=True)
class Change:
    field: str
    """the key under ``services.<name>``, dotted (``resources.cpu``)"""
    current: Any
    recommended: Any
    reason: str


@dataclass(frozen=True)
class Advice:
    service: str
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    observed: dict[str, Any] = field(default_factory=dict)
    energy_kwh_per_day: float | None = None
    """expected change (negative saves)"""
    carbon_g_per_day: float | None = None
    """expected change of operational carbon"""
    embodied_g_per_day: float | None = None
    """expected change of the service's embodied share"""
    skipped: str | None = None
    """why there is no advice"""


def _round_up(value: float, step: float) -> float:
    return math.ceil(value / step - 1e-9) * step


def _differs(current: float | None, recommended: float, tolerance: float) -> bool:
    return current is None or abs(recommended - current) > tolerance * current


def _cpu(usage: Usage, settings: Settings, policy: Policy, observed: dict[str, Any],
         load_factor: float) -> Change | None:
    samples = np.asarray(usage.cpu_cores, dtype=float)
    p50, seen_p95 = (float(np.percentile(samples, q)) for q in (50, policy.cpu_percentile))
    observed["cpu_cores"] = {"p50": p50, f"p{policy.cpu_percentile:g}": seen_p95, "max": float(samples.max())}
    p95 = seen_p95
    if load_factor != 1.0:  # the same load over fewer (more) replicas: each one's busy part grows (shrinks)
        base = float(np.percentile(samples, 10))
        p95 = float(np.percentile(base + (samples - base) * load_factor, policy.cpu_percentile))
    recommended = max(policy.cpu_step, _round_up(p95 * (1 + policy.margin), policy.cpu_step))
    current = settings.cpu
    scale = settings.autoscale
    target = scale["target"] if scale is not None and scale.get("metric") == "cpu" else None
    floor_why = ""
    if target is not None and recommended < target:  # a cpu target is in cores and must stay within the limit
        recommended, floor_why = _round_up(target, policy.cpu_step), f"; kept at or above autoscale.target {target:g}"
    if current is not None and seen_p95 >= policy.saturated_share * current:
        bumped = max(recommended, _round_up(current * policy.cpu_bump, policy.cpu_step))
        return Change("resources.cpu", current, round(bumped, 3), f"throttled: the p{policy.cpu_percentile:g} of "
                      f"{seen_p95:.3g} cores reached {seen_p95 / current:.0%} of the limit, so demand above it is "
                      f"unseen; grow by {policy.cpu_bump - 1:.0%}")
    if not _differs(current, recommended, policy.tolerance):
        return None
    spread = f" at {load_factor:.3g}x today's load each (the replica count changes)" if load_factor != 1.0 else ""
    return Change("resources.cpu", current, round(recommended, 3), f"p{policy.cpu_percentile:g} use {p95:.3g} "
                  f"cores per replica{spread} + {policy.margin:.0%}{floor_why}")


def _memory(usage: Usage, settings: Settings, policy: Policy, basis: str,
            observed: dict[str, Any]) -> Change | None:
    samples = np.asarray(usage.memory_bytes, dtype=float)
    peak = float(samples.max())
    if peak <= 0:  # this platform reports no such figure: nothing to size from
        return None
    observed["memory_bytes"] = {"p50": float(np.percentile(samples, 50)), "max": peak, "basis": basis}
    recommended = max(policy.memory_min_bytes, int(_round_up(peak * (1 + policy.margin), policy.memory_step_bytes)))
    current = settings.memory_bytes
    if current is not None and peak >= policy.saturated_share * current:
        bumped = max(recommended, int(_round_up(current * policy.memory_bump, policy.memory_step_bytes)))
        return Change("resources.memory", format_memory_bytes(current), format_memory_bytes(bumped),
                      f"near its limit: the peak {basis} of {peak / MIB:.0f}Mi is {peak / current:.0%} of it; "
                      f"grow by {policy.memory_bump - 1:.0%}")
    if not _differs(current, recommended, policy.tolerance):
        return None
    return Change("resources.memory", format_memory_bytes(current) if current is not None else None,
                  format_memory_bytes(recommended), f"peak {basis} {peak / MIB:.0f}Mi + {policy.margin:.0%}")


def _replicas(usage: Usage, settings: Settings, policy: Policy, observed: dict[str, Any],
              notes: list[str]) -> list[Change]:
    per_replica = max(1.0, policy.concurrency_utilisation * settings.max_concurrency)
    if not len(usage.inflight):
        notes.append("no in-flight samples (the gateway saw no request for it): replicas left as they are")
        return []
    inflight = np.asarray(usage.inflight, dtype=float)
    p50, p95, peak = (float(np.percentile(inflight, q)) for q in (50, 95, 100))
    observed["inflight"] = {"p50": p50, "p95": p95, "max": peak}
    scale = settings.autoscale
    if scale is None:
        needed = max(1, math.ceil(p95 / per_replica - 1e-9))
        floor = min(settings.replicas, policy.availability_floor)
        recommended = max(needed, floor)
        peak_need = max(1, math.ceil(peak / per_replica - 1e-9))
        median_need = max(1, math.ceil(p50 / per_replica - 1e-9))
        if peak_need >= 2 and peak_need >= 2 * median_need:
            notes.append(f"load swings (in-flight p50 {p50:.3g}, peak {peak:.3g}): consider autoscale: "
                         f"{{min: {median_need}, max: {math.ceil(peak_need * policy.max_growth)}, metric: inflight, "
                         f"target: {per_replica:g}}} instead of fixed replicas")
        if recommended == settings.replicas or settings.replicas == 0:
            return []
        why = (f"in-flight p95 {p95:.3g} needs {needed} at {policy.concurrency_utilisation:.0%} of max_concurrency "
               f"{settings.max_concurrency}")
        if recommended > needed:
            why += f"; kept at {recommended} for availability"
        return [Change("replicas", settings.replicas, recommended, why)]
    changes = []
    desired = np.asarray(usage.desired_replicas, dtype=float)
    if len(desired) and float(desired.max()) >= scale["max"]:
        grown = math.ceil(scale["max"] * policy.max_growth)
        changes.append(Change("autoscale.max", scale["max"], grown, f"the autoscaler asked for "
                              f"{desired.max():g} replicas, the most max allows: grow by {policy.max_growth - 1:.0%}"))
    return changes


def _energy(usage: Usage, settings: Settings, changes: list[Change]) -> dict[str, float | None]:
    by_field = {c.field: c for c in changes}
    cores = np.asarray(usage.cpu_cores, dtype=float)
    memory_j = usage.resident_bytes / GB * MEMORY_W_PER_GB * usage.mean_replicas * usage.window_s
    cpu_j = usage.energy_j - memory_j if usage.energy_j else None  # the report's energy has memory's in it
    j_per_cpu_s = max(0.0, cpu_j) / usage.cpu_s if cpu_j is not None and usage.cpu_s > 0 else None
    g_per_j = usage.carbon_g / usage.energy_j if usage.carbon_g is not None and usage.energy_j else None
    replicas = by_field["replicas"].recommended if "replicas" in by_field else settings.replicas
    removed = replicas - settings.replicas if settings.autoscale is None else 0
    idle_w = None
    if j_per_cpu_s is not None:  # a replica's draw at rest: its quietest CPU, and its memory
        idle_w = float(np.percentile(cores, 10)) * j_per_cpu_s + usage.resident_bytes / GB * MEMORY_W_PER_GB
    energy_w = removed * idle_w if idle_w is not None else None
    cpu_now = settings.cpu
    cpu_new = by_field["resources.cpu"].recommended if "resources.cpu" in by_field else cpu_now
    embodied = None
    if cpu_now is not None and cpu_new is not None and usage.embodied_g is not None and usage.mean_replicas > 0:
        per_core_s = usage.embodied_g / (cpu_now * usage.mean_replicas * usage.window_s)
        count = usage.mean_replicas if settings.autoscale is not None else settings.replicas
        new_count = count + removed
        embodied = (cpu_new * new_count - cpu_now * count) * per_core_s * DAY_S
    return {"energy_kwh_per_day": energy_w * DAY_S / J_PER_KWH if energy_w is not None else None,
            "carbon_g_per_day": energy_w * DAY_S * g_per_j if energy_w is not None and g_per_j is not None else None,
            "embodied_g_per_day": embodied}


def advise(service: str, usage: Usage, settings: Settings, *, memory_basis: str = "working set",
           policy: Policy = Policy()) -> Advice:
    """The advice of the module docs for one service."""
    have = min(len(usage.cpu_cores), len(usage.memory_bytes))
    if have < policy.min_samples:
        return Advice(service, skipped=f"{have} usage samples in the window, {policy.min_samples} needed: run "
                      "under load longer, or widen --window")
    observed: dict[str, Any] = {"samples": have}
    notes: list[str] = []
    changes = _replicas(usage, settings, policy, observed, notes)
    resized = next((c.recommended for c in changes if c.field == "replicas"), settings.replicas)
    load_factor = settings.replicas / resized if settings.autoscale is None and resized else 1.0
    changes = [c for c in (_cpu(usage, settings, policy, observed, load_factor),
                           _memory(usage, settings, policy, memory_basis, observed)) if c is not None] + changes
    return Advice(service, tuple(changes), tuple(notes), observed, **_energy(usage, settings, changes))
