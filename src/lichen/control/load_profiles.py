"""Open-loop load shapes: the request rate over time, and the intended send time of every request.

A profile is a list of ``(t_s, rate_rps)`` points, held (``step``) or joined
by straight lines (``linear``) between points and held after the last one.
:func:`arrival_offsets` turns it into send times that do not depend on how
fast the server answers: ``uniform`` spaces them evenly by the integral of the
rate (as wrk2 does), ``poisson`` draws exponential gaps at the current rate
(as real users arrive). A load generator sends each request at its offset
and measures latency from it, so a server that stalls cannot hide the
queueing it causes (coordinated omission).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Shape = Literal["constant", "step", "ramp", "spike"]
SHAPES: tuple[Shape, ...] = ("constant", "step", "ramp", "spike")


@dataclass(frozen=True)
class LoadProfile:
    """``points``: ``(t_s, rate_rps)`` sorted by time from 0; ``duration_s``: when sending stops."""

    points: tuple[tuple[float, float], ...]
    duration_s: float
    interpolation: Literal["step", "linear"] = "step"
    name: str = "constant"

    def rate_at(self, t_s: float) -> float:
        points = self.points
        if t_s <= points[0][0]:
            return points[0][1]
        for (t0, r0), (t1, r1) in zip(points, points[1:]):
            if t_s < t1:
                if self.interpolation == "linear" and t1 > t0:
                    return r0 + (r1 - r0) * (t_s - t0) / (t1 - t0)
                return r0
        return points[-1][1]

    def expected_requests(self) -> float:
        """The integral of the rate from 0 to ``duration_s``: how many requests a run sends."""
        step = self.duration_s / 2000  # the midpoint rule: exact for steps and lines up to the slice width
        return sum(self.rate_at((i + 0.5) * step) for i in range(2000)) * step

    def peak_rps(self) -> float:
        return max(rate for _, rate in self.points)


def shaped(shape: Shape, rate_rps: float, duration_s: float, steps: int = 5, spike_factor: float = 5.0) -> LoadProfile:
    """A built-in shape reaching ``rate_rps``: ``constant``; ``step``, ``steps`` equal rises up to it; ``ramp``,
    a straight line from 0 up to it; ``spike``, ``rate_rps`` with ``spike_factor`` times it for the middle tenth."""
    if rate_rps <= 0 or not math.isfinite(rate_rps):
        raise ValueError(f"rate must be a positive number of requests per second, not {rate_rps}")
    if duration_s <= 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration must be positive, not {duration_s}")
    if shape == "constant":
        return LoadProfile(((0.0, rate_rps),), duration_s, name=shape)
    if shape == "step":
        width = duration_s / steps
        return LoadProfile(tuple((i * width, rate_rps * (i + 1) / steps) for i in range(steps)), duration_s, name=shape)
    if shape == "ramp":
        return LoadProfile(((0.0, 0.0), (duration_s, rate_rps)), duration_s, "linear", name=shape)
    if shape == "spike":
        start, end = duration_s * 0.45, duration_s * 0.55
        return LoadProfile(((0.0, rate_rps), (start, rate_rps * spike_factor), (end, rate_rps)), duration_s,
                           name=shape)
    raise ValueError(f"unknown profile {shape!r}; profiles: {', '.join(SHAPES)} or a file")


def parse_profile(text: str, where: str, duration_s: float | None = None) -> LoadProfile:
    """A profile file: one ``SECONDS RATE`` pair per line (``#`` comments; spaces or a comma between), times
    rising from 0; ``linear`` alone on a line joins the points by lines. The run lasts ``duration_s`` or, if
    None, until the last point's time. Errors name ``where:line``."""
    points: list[tuple[float, float]] = []
    interpolation: Literal["step", "linear"] = "step"
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if body.lower() in ("linear", "step"):
            interpolation = "linear" if body.lower() == "linear" else "step"
            continue
        fields = body.replace(",", " ").split()
        try:
            if len(fields) != 2:
                raise ValueError
            t_s, rate = float(fields[0]), float(fields[1])
        except ValueError:
            raise ValueError(f"{where}:{number}: expected 'SECONDS RATE' (two numbers), got {body!r}") from None
        if not (math.isfinite(t_s) and math.isfinite(rate)) or t_s < 0 or rate < 0:
            raise ValueError(f"{where}:{number}: time and rate must be finite and not negative")
        if points and t_s <= points[-1][0]:
            raise ValueError(f"{where}:{number}: time {t_s:g} s does not come after {points[-1][0]:g} s")
        points.append((t_s, rate))
    if not points:
        raise ValueError(f"{where}: no 'SECONDS RATE' lines")
    if points[0][0] != 0:
        points.insert(0, (0.0, 0.0 if interpolation == "linear" else points[0][1]))
    end = duration_s if duration_s is not None else points[-1][0]
    if end <= 0:
        raise ValueError(f"{where}: the profile lasts 0 s; give --duration or a later last point")
    if max(rate for _, rate in points) <= 0:
        raise ValueError(f"{where}: every rate is 0: nothing would be sent")
    return LoadProfile(tuple(points), end, interpolation, name=where)


def arrival_offsets(profile: LoadProfile, arrivals: Literal["uniform", "poisson"] = "uniform",
                    seed: int = 0) -> Iterator[float]:
    """Intended send times, seconds from the start, in order, until ``profile.duration_s``.

    ``uniform``: request n (counting from 0) goes when the rate's integral
    reaches n, so the first goes at once (a rate of 0 sends nothing until it
    rises). ``poisson``: exponential gaps at
    the rate of the moment (thinning against the peak rate, so it is exact
    for any shape)."""
    end = profile.duration_s
    if arrivals == "poisson":
        draw = random.Random(seed)
        peak = profile.peak_rps()
        t_s = 0.0
        while True:
            t_s += draw.expovariate(peak)
            if t_s >= end:
                return
            if draw.random() * peak <= profile.rate_at(t_s):
                yield t_s
    # uniform: request n (from 0) goes when the rate's integral reaches n; the integral is taken slice by slice,
    # each slice at its midpoint rate, and slice edges are computed (i * width), not summed, so no drift
    slices = max(1, math.ceil(end / 0.01))
    width = end / slices
    reached, n = 0.0, 0
    for i in range(slices):
        rate = profile.rate_at((i + 0.5) * width)
        if rate <= 0:
            continue
        after = reached + rate * width
        while n < after - 1e-9 * max(1.0, after):  # the tolerance absorbs the float sum's rounding
            yield i * width + max(0.0, n - reached) / rate
            n += 1
        reached = after
