"""Prometheus text exposition parsing (via prometheus_client's parser) into flat samples.

Interface: ``parse_exposition(text) -> list[ExposedSample]`` where each sample has the series
``name`` (``x_bucket``, ``x_count``, ``c_total`` ...), its ``labels`` dict and ``value``.
Malformed text raises :class:`lichen.errors.DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from lichen.errors import DataError


@dataclass(frozen=True)
class ExposedSample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp_s: float | None = None


def parse_exposition(text: str) -> list[ExposedSample]:
    out: list[ExposedSample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                ts = s.timestamp
                out.append(ExposedSample(s.name, s.labels, float(s.value), float(ts) if ts is not None else None))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataError(f"malformed Prometheus exposition: {exc}") from None
    return out
