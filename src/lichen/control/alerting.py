"""The alert state machine of one alerting rule, as Prometheus 2.x ``rules/alerting.go`` runs it.

Pure: ``step_alerts(active, results, rule, now_s)`` takes the rule's active alerts, this
evaluation's results (labels and annotations already templated) and ``now``, and returns the new
active alerts plus the samples to write to ``ALERTS`` and ``ALERTS_FOR_STATE``.

States: an alert whose expression returns a sample starts *pending* (activeAt = now) and becomes
*firing* once ``now - activeAt >= for``. When the sample disappears, a pending alert is dropped
and a firing alert becomes *inactive* (resolved, ``resolved_at`` = now) — unless
``keep_firing_for`` is set, in which case it stays firing until the condition has been absent
that long. Resolved alerts are kept for 15 minutes so notifiers can send "resolved".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

PENDING = "pending"
FIRING = "firing"
INACTIVE = "inactive"
RESOLVED_RETENTION_S = 15 * 60.0

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AlertRuleSpec:
    name: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0


@dataclass(frozen=True)
class AlertResult:
    """One sample returned by the rule's expression, after templating."""

    labels: LabelSet
    annotations: LabelSet
    value: float


@dataclass(frozen=True)
class Alert:
    labels: LabelSet
    annotations: LabelSet
    state: str
    active_at_s: float
    value: float
    fired_at_s: float | None = None
    resolved_at_s: float | None = None
    keep_firing_since_s: float | None = None
    last_sent_s: float | None = field(default=None, compare=False)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def annotation_dict(self) -> dict[str, str]:
        return dict(self.annotations)


@dataclass(frozen=True)
class AlertSample:
    """A sample for the ALERTS / ALERTS_FOR_STATE series."""

    labels: LabelSet
    value: float


class DuplicateAlertError(ValueError):
    pass


def step_alerts(
    active: dict[LabelSet, Alert], results: list[AlertResult], rule: AlertRuleSpec, now_s: float
) -> tuple[dict[LabelSet, Alert], list[AlertSample]]:
    """One evaluation of an alerting rule: the new active set and the ALERTS samples to write."""
    current: dict[LabelSet, AlertResult] = {}
    for r in results:
        if r.labels in current:
            raise DuplicateAlertError("vector contains metrics with the same labelset after applying alert labels")
        current[r.labels] = r
    new: dict[LabelSet, Alert] = {}
    for key, alert in active.items():
        new[key] = alert
    for key, r in current.items():
        prev = new.get(key)
        if prev is not None and prev.state != INACTIVE:
            new[key] = replace(prev, value=r.value, annotations=r.annotations)
        else:
            new[key] = Alert(labels=key, annotations=r.annotations, state=PENDING, active_at_s=now_s, value=r.value)
    samples: list[AlertSample] = []
    for key in list(new):
        alert = new[key]
        if key not in current:
            keep_firing = False
            if alert.state == FIRING and rule.keep_firing_for_s > 0:
                since = alert.keep_firing_since_s if alert.keep_firing_since_s is not None else now_s
                alert = replace(alert, keep_firing_since_s=since)
                if now_s - since < rule.keep_firing_for_s:
                    keep_firing = True
            if alert.state == PENDING or (
                alert.resolved_at_s is not None and now_s - alert.resolved_at_s > RESOLVED_RETENTION_S
            ):
                del new[key]
                continue
            if alert.state != INACTIVE and not keep_firing:
                alert = replace(alert, state=INACTIVE, resolved_at_s=now_s)
            new[key] = alert
            if not keep_firing:
                continue
        else:
            alert = replace(alert, keep_firing_since_s=None)
        if alert.state == PENDING and now_s - alert.active_at_s >= rule.for_s:
            alert = replace(alert, state=FIRING, fired_at_s=now_s)
        new[key] = alert
        base = dict(key)
        samples.append(AlertSample(_with(base, {"__name__": "ALERTS", "alertstate": alert.state}), 1.0))
        samples.append(AlertSample(_with(base, {"__name__": "ALERTS_FOR_STATE"}), float(int(alert.active_at_s))))
    return new, samples


def _with(base: dict[str, str], extra: dict[str, str]) -> LabelSet:
    merged = dict(base)
    merged.update(extra)
    return tuple(sorted((k, v) for k, v in merged.items() if v != ""))


def active_alerts(active: dict[LabelSet, Alert]) -> list[Alert]:
    """Alerts that are pending or firing (what ``/api/v1/alerts`` and notifiers look at)."""
    return [a for a in active.values() if a.state != INACTIVE]
