"""Durations, memory, CPU and cron as lichen.yaml writes them."""

from __future__ import annotations

import pytest

from lichen.spec.quantities import (
    format_duration,
    format_memory_bytes,
    parse_cpu_cores,
    parse_cron,
    parse_duration_s,
    parse_memory_bytes,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), (0.5, 0.5), ("10", 10.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("6h", 21600.0),
     ("1h30m", 5400.0), ("3d", 259200.0), ("1w", 604800.0), ("1.5s", 1.5), (" 2m ", 120.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 mins", "5min", "m5", "", "1h 30m", "-5", "1x", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


def test_negative_number_duration() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration_s(-1)


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("512Mi", 512 * 1024**2), ("1Gi", 1024**3), ("1G", 10**9), ("2k", 2000), ("1.5Gi", 3 * 2**29),
     ("64Ki", 65536)],
)
def test_memory(text: object, size: int) -> None:
    assert parse_memory_bytes(text) == size


@pytest.mark.parametrize(("text", "needle"), [("-1Gi", "positive"), ("0", "positive"), ("1GB", "invalid"),
                                              ("lots", "invalid"), (False, "expected")])
def test_bad_memory(text: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_memory_bytes(text)


@pytest.mark.parametrize(("text", "cores"), [(1, 1.0), (0.5, 0.5), ("500m", 0.5), ("2", 2.0), ("1.5", 1.5)])
def test_cpu(text: object, cores: float) -> None:
    assert parse_cpu_cores(text) == cores


@pytest.mark.parametrize("text", ["-1", "0m", "1 core", True, 0])
def test_bad_cpu(text: object) -> None:
    with pytest.raises(ValueError):
        parse_cpu_cores(text)


@pytest.mark.parametrize(("seconds", "text"), [(90, "1m30s"), (0.25, "250ms"), (0, "0s"), (21600, "6h"),
                                               (86400 + 1, "1d1s"), (1.5, "1s500ms"), (0.5, "500ms")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("size", "text"), [(1024**3, "1Gi"), (10 * 1024**2, "10Mi"), (1000, "1000"), (0, "0")])
def test_format_memory(size: int, text: str) -> None:
    assert format_memory_bytes(size) == text


def test_cron_fields() -> None:
    minute, hour, dom, month, dow = parse_cron("*/15 3,15 1-7 * 7")
    assert minute == {0, 15, 30, 45} and hour == {3, 15} and dom == set(range(1, 8))
    assert month == set(range(1, 13)) and dow == {0}
    assert parse_cron("0 9-17/4 * * 1-5")[1] == {9, 13, 17}


@pytest.mark.parametrize(
    ("text", "needle"),
    [("0 3 * *", "5 fields"), ("60 * * * *", "minute 60 is outside 0-59"), ("0 24 * * *", "hour 24"),
     ("0 0 0 * *", "day of month 0"), ("0 0 * 13 *", "month 13"), ("0 0 * * 8", "day of week 8"),
     ("5-1 * * * *", "empty range"), ("*/0 * * * *", "empty range"), ("mon * * * *", "is not")],
)
def test_bad_cron(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_cron(text)


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [(parse_memory_bytes, "1e9", 10**9), (parse_memory_bytes, "1E9", 10**9), (parse_memory_bytes, 1e9, 10**9),
     (parse_memory_bytes, "2Pi", 2 * 1024**5), (parse_memory_bytes, "0.5", 1), (parse_memory_bytes, ".5Gi", 2**29),
     (parse_duration_s, "1e3", 1000.0), (parse_duration_s, "1.5h", 5400.0), (parse_duration_s, "0", 0.0),
     (parse_cpu_cores, "1e0", 1.0)],
)
def test_exponents_and_fractions(parse: object, text: object, expected: float) -> None:
    assert parse(text) == expected  # type: ignore[operator]


@pytest.mark.parametrize("parse", [parse_memory_bytes, parse_duration_s, parse_cpu_cores])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), "1e400"])
def test_non_finite_quantities_are_refused(parse: object, value: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse(value)  # type: ignore[operator]


@pytest.mark.parametrize(("text", "suggestion"), [("512mi", "512Mi"), ("1gi", "1Gi"), ("512m", "512M")])
def test_a_memory_unit_in_the_wrong_case_gets_a_suggestion(text: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"did you mean {suggestion}\\?"):
        parse_memory_bytes(text)


@pytest.mark.parametrize("parse", [parse_memory_bytes, parse_duration_s, parse_cpu_cores])
def test_a_boolean_quantity_says_what_it_got(parse: object) -> None:
    with pytest.raises(ValueError, match="got true$"):
        parse(True)  # type: ignore[operator]
