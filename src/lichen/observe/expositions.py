"""Prometheus text exposition parsing (via prometheus_client's parser) into flat samples.

Interface:

* ``parse_exposition(text) -> list[ExposedSample]`` — every sample's series ``name``
  (``x_bucket``, ``x_count``, ``c_total`` ...), ``labels`` dict and ``value``.
* ``ExpositionParser().parse(text) -> list[tuple[str, str, dict, float]]`` — the same as
  ``(series_text, name, labels, value)``, for repeated scrapes of one target: a series line's
  name and labels are parsed by prometheus_client the first time the series text is seen and
  remembered, so later scrapes only read the value. This keeps scraping cheap (most lines repeat
  from scrape to scrape).

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


class ExpositionParser:
    """Parses expositions of one target, remembering each series line's parsed name and labels."""

    def __init__(self, max_cached: int = 100_000) -> None:
        self._series: dict[str, tuple[str, dict[str, str]]] = {}
        self.max_cached = max_cached
        #: metric family name -> {"type": ..., "help": ...} from the # TYPE and # HELP lines
        self.metadata: dict[str, dict[str, str]] = {}

    def parse(self, text: str) -> list[tuple[str, str, dict[str, str], float]]:
        out = []
        cache = self._series
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                    entry = self.metadata.setdefault(parts[2], {"type": "unknown", "help": ""})
                    text = parts[3] if len(parts) > 3 else ""
                    entry["type" if parts[1] == "TYPE" else "help"] = text.replace("\\n", "\n").replace("\\\\", "\\")
                continue
            if "{" in line:
                end = line.rfind("}")
                if end < 0:
                    raise DataError(f"malformed Prometheus exposition line: {line[:200]!r}")
                series, rest = line[: end + 1], line[end + 1 :].split()
            else:
                parts = line.split()
                series, rest = parts[0], parts[1:]
            if not rest or len(rest) > 2:
                raise DataError(f"malformed Prometheus exposition line: {line[:200]!r}")
            parsed = cache.get(series)
            if parsed is None:
                [sample] = parse_exposition(f"{series} 0\n")
                parsed = (sample.name, sample.labels)
                if len(cache) >= self.max_cached:
                    cache.clear()
                cache[series] = parsed
            try:
                value = float(rest[0])
            except ValueError:
                raise DataError(f"malformed Prometheus exposition value {rest[0]!r} in {line[:200]!r}") from None
            out.append((series, parsed[0], parsed[1], value))
        return out
