"""Open-loop schedules: each shape sends what its rate integrates to, when it should, and profile files fail
with file:line."""

from __future__ import annotations

import statistics

import pytest

from lichen.control.load_profiles import arrival_offsets, parse_profile, shaped


def _count_between(offsets: list[float], start: float, end: float) -> int:
    return sum(1 for t in offsets if start <= t < end)


def test_constant_uniform_arrivals_are_evenly_spaced_and_exactly_counted() -> None:
    offsets = list(arrival_offsets(shaped("constant", 250.0, 4.0)))
    assert len(offsets) == 1000
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert min(gaps) == pytest.approx(0.004) and max(gaps) == pytest.approx(0.004)
    assert offsets == sorted(offsets) and offsets[-1] < 4.0


def test_a_rate_that_is_not_a_divisor_of_the_slice_still_sends_its_integral() -> None:
    offsets = list(arrival_offsets(shaped("constant", 33.3, 3.0)))
    assert len(offsets) == 100  # requests 0..99: the integral, 99.9, rounded up (the first goes at 0)


def test_step_rises_in_equal_steps_and_ramp_grows_linearly() -> None:
    step = list(arrival_offsets(shaped("step", 100.0, 5.0)))
    assert [_count_between(step, i, i + 1) for i in range(5)] == [20, 40, 60, 80, 100]
    ramp = list(arrival_offsets(shaped("ramp", 200.0, 4.0)))
    assert len(ramp) == pytest.approx(400, abs=1)  # the triangle's area: 200 * 4 / 2
    halves = _count_between(ramp, 0, 2), _count_between(ramp, 2, 4)
    assert halves[1] == pytest.approx(3 * halves[0], rel=0.02)  # the second half of a ramp carries 3x the first


def test_spike_multiplies_the_rate_for_the_middle_tenth() -> None:
    offsets = list(arrival_offsets(shaped("spike", 100.0, 10.0)))
    assert _count_between(offsets, 4.5, 5.5) == 500 and _count_between(offsets, 0, 1) == 100


def test_poisson_arrivals_follow_the_rate_with_exponential_gaps() -> None:
    profile = shaped("constant", 500.0, 20.0)
    offsets = list(arrival_offsets(profile, "poisson", seed=7))
    assert len(offsets) == pytest.approx(10_000, rel=0.03)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.002, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.002, rel=0.05)  # exponential: the stdev equals the mean
    assert list(arrival_offsets(profile, "poisson", seed=7))[:50] == offsets[:50]  # seeded: repeatable
    stepped = list(arrival_offsets(shaped("step", 400.0, 10.0), "poisson", seed=1))
    assert _count_between(stepped, 8, 10) == pytest.approx(800, rel=0.1)  # thinning follows the shape


def test_profile_files_hold_or_join_their_points() -> None:
    held = parse_profile("# warm up, then hold\n0 10\n2 50\n", "p.txt", duration_s=4.0)
    offsets = list(arrival_offsets(held))
    assert _count_between(offsets, 0, 2) == 20 and _count_between(offsets, 2, 4) == 100
    joined = parse_profile("linear\n0,0\n4,100\n", "p.txt")
    assert joined.duration_s == 4.0 and len(list(arrival_offsets(joined))) == pytest.approx(200, abs=1)


@pytest.mark.parametrize(("text", "message"), [
    ("0 10\nfast 20\n", "p.txt:2: expected 'SECONDS RATE'"),
    ("0 10\n5 20\n3 30\n", "p.txt:3: time 3 s does not come after 5 s"),
    ("0 -1\n", "p.txt:1: time and rate must be finite and not negative"),
    ("# nothing\n", "p.txt: no 'SECONDS RATE' lines"),
    ("0 0\n5 0\n", "p.txt: every rate is 0"),
    ("0 nan\n", "p.txt:1: time and rate must be finite"),
])
def test_bad_profile_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_profile(text, "p.txt", duration_s=None)


def test_bad_rates_and_durations_are_refused() -> None:
    for rate, duration in ((0.0, 1.0), (-5.0, 1.0), (float("inf"), 1.0), (10.0, 0.0)):
        with pytest.raises(ValueError):
            shaped("constant", rate, duration)
