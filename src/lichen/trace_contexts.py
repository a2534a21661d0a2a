"""W3C Trace Context (``traceparent``), and which traces are sampled: pure functions of the header and the ratio.

A ``traceparent`` is ``VERSION-TRACE_ID-PARENT_ID-FLAGS`` in lower-case hex
(https://www.w3.org/TR/trace-context/#traceparent-header)::

    00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01

:func:`parse_traceparent` follows the spec's parsing rules: version ``ff`` is
invalid; version ``00`` is exactly 55 characters; a later version may carry
more after a ``-``, of which the first four fields are read; an all-zero trace
or parent id is invalid. An invalid header is treated as absent: a new trace
starts, as the spec asks.

Sampling is OpenTelemetry's default ``ParentBased(TraceIdRatioBased(ratio))``:
a request with a parent follows the parent's sampled flag, so a trace is kept
or dropped whole; a new trace is kept when the lower 64 bits of its trace id
fall under ``ratio`` × 2⁶⁴, the same rule every OpenTelemetry SDK applies, so a
service on any SDK downstream decides the same way.
"""

from __future__ import annotations

import re
from typing import NamedTuple

SAMPLED = 0x01
_MASK_64 = (1 << 64) - 1
# version, trace id, parent id, flags; version 00 ends there, a later one may go on after a dash
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?", re.S)


class TraceParent(NamedTuple):
    """A parsed ``traceparent``: ids as integers, the sampled flag."""

    trace_id: int
    parent_id: int
    sampled: bool


def parse_traceparent(value: bytes | str | None) -> TraceParent | None:
    """The parent a request carries, or None when it carries none or an invalid one (then a new trace starts)."""
    if value is None:
        return None
    raw = (value.encode("latin-1", "replace") if isinstance(value, str) else value).strip(b" \t")
    match = _TRACEPARENT.fullmatch(raw)
    if match is None:
        return None
    version = match.group(1)
    if version == b"ff" or (version == b"00" and len(raw) != 55):
        return None
    trace_id, parent_id = int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not parent_id:
        return None
    return TraceParent(trace_id, parent_id, bool(int(match.group(4), 16) & SAMPLED))


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """The ``traceparent`` that names ``span_id`` as the parent of what follows."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def ratio_bound(ratio: float) -> int:
    """The bound the lower 64 bits of a trace id are compared with (OpenTelemetry's ``TraceIdRatioBased``)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a sampling ratio is from 0 to 1, got {ratio!r}")
    return round(ratio * (1 << 64))


def is_sampled(parent: TraceParent | None, trace_id: int, bound: int) -> bool:
    """Parent-based: a parent's flag decides; a new trace (``trace_id``) is kept when under ``bound``."""
    if parent is not None:
        return parent.sampled
    return (trace_id & _MASK_64) < bound
