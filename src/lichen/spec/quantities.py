"""Durations, byte sizes and CPU quantities as they appear in ``lichen.yaml``.

* durations: a number of seconds (``2``, ``0.5``) or a Go-style string
  (``500ms``, ``10s``, ``5m``, ``6h``, ``1h30m``, ``3d``);
* memory: a number of bytes or a Kubernetes quantity (``512Mi``, ``1Gi``, ``1G``);
* cpu: a number of cores (``1``, ``0.5``) or millicores (``500m``).

Each parser raises ``ValueError`` with a message saying what was expected;
pydantic turns it into a located spec error.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_MEMORY_UNITS = {
    "": 1,
    "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "P": 1000**5, "E": 1000**6,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6,
}
_MEMORY = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?")
# A plain decimal number, also in exponent form: YAML 1.1 reads 1e9 as a string, YAML 1.2 as a number.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _shown(value: object) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _finite(value: float, what: str, written: object = None) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a {what} must be a finite number, got {written if written is not None else value!r}")
    return number


def parse_duration_s(value: object) -> float:
    """Seconds from a number or a string like ``"1h30m"``; never negative."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 10, 500ms, 30s, 5m or 6h, got {_shown(value)}")
    if isinstance(value, (int, float)):
        seconds = _finite(value, "duration")
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):  # "90", "2.5", "1e3": seconds, as a bare number means
            seconds = _finite(float(text), "duration", repr(value))
        else:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {value!r}: expected a number of seconds or a string "
                    "such as 500ms, 30s, 5m, 6h or 1h30m"
                )
    else:
        raise ValueError(f"expected a duration such as 10, 500ms, 30s, 5m or 6h, got {_shown(value)}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


def parse_memory_bytes(value: object) -> int:
    """Bytes from a number or a quantity like ``"512Mi"``; must be positive."""
    if isinstance(value, bool):
        raise ValueError(f"expected a memory size such as 512Mi or 1Gi, got {_shown(value)}")
    if isinstance(value, (int, float)):
        size = _finite(value, "memory size")
    elif isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if not match:
            unit = re.sub(r"^[-+\d.eE\s]+", "", value.strip())
            close = next((u for u in _MEMORY_UNITS if u and u.lower() == unit.lower()), None)
            hint = f"; units are case-sensitive: did you mean {value.strip()[: -len(unit)]}{close}?" if close else ""
            raise ValueError(
                f"invalid memory size {value!r}: expected bytes or a quantity such as 512Mi, 1Gi or 2G{hint}"
            )
        size = _finite(float(match.group(1)), "memory size", repr(value)) * _MEMORY_UNITS[match.group(2) or ""]
    else:
        raise ValueError(f"expected a memory size such as 512Mi or 1Gi, got {_shown(value)}")
    if size <= 0:
        raise ValueError(f"memory must be positive, got {value!r}")
    return math.ceil(size)  # as Kubernetes does: a fraction of a byte rounds up


def parse_cpu_cores(value: object) -> float:
    """Cores from a number or millicores like ``"500m"``; must be positive."""
    if isinstance(value, bool):
        raise ValueError(f"expected a CPU amount such as 1, 0.5 or 500m, got {_shown(value)}")
    if isinstance(value, (int, float)):
        cores = _finite(value, "CPU amount")
    elif isinstance(value, str) and re.fullmatch(r"-?\d+m", value.strip()):
        cores = int(value.strip()[:-1]) / 1000
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        cores = _finite(float(value), "CPU amount", repr(value))
    else:
        raise ValueError(f"invalid CPU amount {value!r}: expected cores (1, 0.5) or millicores (500m)")
    if cores <= 0:
        raise ValueError(f"cpu must be positive, got {value!r}")
    return cores


def format_duration(seconds: float) -> str:
    """The shortest Go/Prometheus-style string for a duration.

    ``90`` -> ``"1m30s"``, ``0.5`` -> ``"500ms"``, ``1.5`` -> ``"1s500ms"``;
    Prometheus rejects fractions such as ``0.5s``, so none are written.
    """
    total_ms = round(seconds * 1000)
    parts = []
    for unit, size_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if total_ms >= size_ms:
            parts.append(f"{total_ms // size_ms}{unit}")
            total_ms %= size_ms
    return "".join(parts) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration_s)]
MemoryBytes = Annotated[int, BeforeValidator(parse_memory_bytes)]
CpuCores = Annotated[float, BeforeValidator(parse_cpu_cores)]


def format_memory_bytes(size: int) -> str:
    """The shortest exact Kubernetes quantity for a byte count (``1073741824`` -> ``"1Gi"``)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size and size % _MEMORY_UNITS[unit] == 0:
            return f"{size // _MEMORY_UNITS[unit]}{unit}"
    return str(size)


# ------------------------------------------------------------------- cron

CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_ITEM = re.compile(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?")


def parse_cron(schedule: str) -> tuple[frozenset[int], ...]:
    """The five value sets of a numeric cron expression (``"0 3 * * *"``).

    Supports ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n`` and
    lists joined by commas. Day of week 7 means Sunday, as 0 does. Raises
    ``ValueError`` naming the offending field.
    """
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron schedule {schedule!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            "such as '0 3 * * *'"
        )
    result: list[frozenset[int]] = []
    for text, (label, low, high) in zip(fields, CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            match = _CRON_ITEM.fullmatch(item)
            if not match:
                raise ValueError(f"invalid cron schedule {schedule!r}: {label} {item!r} is not *, N, A-B or a step */N")
            base, step_text = match.group(1), match.group(2)
            if base == "*":
                start, stop = low, high
            elif "-" in base:
                start, stop = (int(part) for part in base.split("-"))
            else:
                start = stop = int(base)
            step = int(step_text) if step_text else 1
            for bound in (start, stop):
                if not low <= bound <= high:
                    raise ValueError(f"invalid cron schedule {schedule!r}: {label} {bound} is outside {low}-{high}")
            if start > stop or step < 1:
                raise ValueError(f"invalid cron schedule {schedule!r}: {label} {item!r} is an empty range")
            values.update(range(start, stop + 1, step))
        if label == "day of week" and 7 in values:
            values = (values - {7}) | {0}
        result.append(frozenset(values))
    return tuple(result)
