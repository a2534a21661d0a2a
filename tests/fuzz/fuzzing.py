"""How every fuzz test in tests/fuzz is bounded: a fixed example budget, no deadline, reproducible.

In ``make test`` each test runs its own ``max_examples`` with ``derandomize=True``
(the examples are a function of the test, so CI sees the same ones every run)
and no example database, so the suite stays inside its time budget and leaves
no files behind. To fuzz longer on your own machine (docs/security.md, "Fuzzing"):

    LICHEN_FUZZ_SCALE=50 python -m pytest tests/fuzz            # 50x the examples, still the same seed
    LICHEN_FUZZ_SCALE=50 LICHEN_FUZZ_RANDOM=1 python -m pytest tests/fuzz   # fresh random examples

With ``LICHEN_FUZZ_RANDOM=1`` Hypothesis keeps failing examples in ``.hypothesis/``
and replays them first; copy each into the test as an ``@example`` (a regression test).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def scale() -> float:
    """The multiplier for every test's example budget (``LICHEN_FUZZ_SCALE``, default 1)."""
    text = os.environ.get("LICHEN_FUZZ_SCALE", "1")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"LICHEN_FUZZ_SCALE must be a number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"LICHEN_FUZZ_SCALE must be > 0, got {text!r}")
    return value


def random_mode() -> bool:
    return os.environ.get("LICHEN_FUZZ_RANDOM", "").lower() in ("1", "true", "yes")


def fuzz_settings(max_examples: int, **overrides: object) -> settings:
    """Settings for one fuzz test: ``max_examples`` (times :func:`scale`), reproducible unless asked otherwise."""
    kwargs: dict[str, object] = {
        "max_examples": max(1, int(max_examples * scale())),
        "deadline": None,
        "derandomize": not random_mode(),
        "database": settings.default.database if random_mode() else None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                  HealthCheck.large_base_example],
    }
    kwargs.update(overrides)
    return settings(**kwargs)  # type: ignore[arg-type]
