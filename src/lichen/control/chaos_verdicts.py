"""What a chaos run measured, and whether each hypothesis held: pure functions over plain observations.

For each fault: **detected** is when the controller first reported something
about its target after the injection (an event); **recovered** is when the
target was back at full strength after that (every wanted replica ready, or
the gateway or controller answering again) *and* the last request that failed
because of it had been sent. Requests that failed, and those the gateway
retried, are counted between injection and recovery.

For an alert receiver held down, **recovered** is when the fault had lifted
and the controller's outbox held nothing pending for that receiver any more;
a notification created during the run that was given up (``failed``) or was
still pending when the run stopped waiting for the outbox is **lost**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lichen.spec.experiments import UNDETECTED, Hypothesis


@dataclass(frozen=True)
class FaultOutcome:
    kind: str
    target: str
    injected_s: float
    """seconds from the start of the load"""
    detected_s: float | None
    """seconds after injection; None when nothing reported it"""
    recovered_s: float | None
    """seconds after injection; None when it had not recovered by the end of the run"""
    failed: int
    """requests sent between injection and recovery that failed (transport failures and 5xx)"""


def at_full_strength(status: Mapping[str, object]) -> bool:
    """Whether a controller's status (``/v1/status``) shows every wanted replica ready, no rollout under way and the
    gateway ready: what "recovered" waits for."""
    services = status.get("services") or {}
    gateway = status.get("gateway") or {}
    return all(s.get("ready", 0) >= s.get("desired", 0)  # type: ignore[union-attr]
               and (s.get("rollout") or {}).get("status", "complete") == "complete"  # type: ignore[union-attr]
               for s in services.values()) and gateway.get("state", "Ready") == "Ready"  # type: ignore[union-attr]


def outbox_drained(outbox: Mapping[str, Any]) -> dict[str, bool]:
    """Per receiver of a ``GET /v1/notifications`` answer: True when it is not held down and nothing created
    since the run started waits to be delivered to it."""
    down = outbox.get("down_until") or {}
    pending = {n["receiver"] for n in outbox.get("notifications") or [] if n["outcome"] == "pending"}
    names = set(outbox.get("receivers") or []) | pending | set(down)
    return {name: name not in down and name not in pending for name in sorted(names)}


def notification_tally(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's notifications by outcome; ``lost`` counts those given up (``failed``) and those still pending.
    A superseded Alertmanager push is not lost: the next push carried the same alerts."""
    outcomes = [str(n["outcome"]) for n in items]
    lost = [{k: n.get(k) for k in ("id", "receiver", "status", "attempts", "outcome", "last_error")}
            for n in items if n["outcome"] in ("failed", "pending")]
    return {"created": len(items), "delivered": outcomes.count("delivered"), "superseded": outcomes.count("superseded"),
            "failed": outcomes.count("failed"), "pending": outcomes.count("pending"), "lost": len(lost),
            "lost_items": lost[:50]}


def detected_after(injected_s: float, reports_s: Sequence[float]) -> float | None:
    """Seconds from injection to the first report at or after it."""
    later = [t for t in reports_s if t >= injected_s]
    return min(later) - injected_s if later else None


def recovered_after(injected_s: float, healthy: Sequence[tuple[float, bool]], failures_s: Sequence[float],
                    detected_s: float | None, window_end_s: float) -> float | None:
    """Seconds from injection until health held (up to ``window_end_s``, when the next fault struck) and no
    request failed any more; None when that did not happen within the window.

    ``healthy``: ``(t, ok)`` samples in time order; ``failures_s``: intended send times of failed requests.
    Health counts only from detection on (before it, the controller did not know yet), and the last unhealthy
    sample in the window must be followed by a healthy one."""
    start = injected_s + (detected_s or 0.0)
    last_bad = None
    first_good_after: float | None = None
    for t, ok in healthy:
        if t < injected_s or t >= window_end_s:
            continue
        if not ok:
            last_bad, first_good_after = t, None
        elif first_good_after is None and t >= start:
            first_good_after = t
    if first_good_after is None:
        return None
    if last_bad is not None and first_good_after < last_bad:
        return None
    late_failures = [t for t in failures_s if injected_s <= t < window_end_s]
    done = max([first_good_after, *late_failures])
    return done - injected_s


def failed_between(failures_s: Sequence[float], start_s: float, end_s: float) -> int:
    """Failed requests sent from ``start_s`` up to ``end_s`` (recovery, or the next fault when there was none)."""
    return sum(1 for t in failures_s if start_s <= t <= end_s)


def _holds(value: float, op: str, limit: float) -> bool:
    return value < limit if op == "<" else value <= limit if op == "<=" else value == limit


def judge(hypotheses: Sequence[Hypothesis], latency_s: Mapping[str, float | None], error_ratio: float,
          failed: int, outcomes: Sequence[FaultOutcome], orphans: int,
          notifications_lost: int | None = None) -> list[dict[str, object]]:
    """Each hypothesis with ``held`` and what was ``measured`` (the worst case over faults for times);
    ``notifications_lost`` None: the outbox could not be read, so a hypothesis about it does not hold."""
    verdicts = []
    for hypothesis in hypotheses:
        measure = hypothesis.measure
        value: float | None
        if measure in latency_s:
            value = latency_s[measure]
            shown = "no answers" if value is None else f"{value * 1000:.1f} ms"
        elif measure == "errors":
            value, shown = error_ratio, f"{error_ratio * 100:.3f} %"
        elif measure == "failed":
            value, shown = float(failed), f"{failed} failed"
        elif measure == "orphans":
            value, shown = float(orphans), f"{orphans} orphaned"
        elif measure == "notifications_lost":
            value = None if notifications_lost is None else float(notifications_lost)
            shown = "the outbox could not be read" if value is None else f"{notifications_lost} lost"
        else:  # recovered, detected: the slowest fault; one that never got there fails the hypothesis
            times = [o.recovered_s if measure == "recovered" else o.detected_s for o in outcomes
                     if measure == "recovered" or o.kind not in UNDETECTED]  # nothing is meant to detect these
            value = None if any(t is None for t in times) or not times else max(times)  # type: ignore[type-var]
            shown = f"not {measure} by the end" if value is None else f"{value:.2f} s"
        held = value is not None and _holds(value, hypothesis.op, hypothesis.limit)
        verdicts.append({"hypothesis": hypothesis.text, "held": held, "measured": shown})
    return verdicts
