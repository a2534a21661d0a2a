"""Alertmanager's notification semantics as pure functions of plain data.

What this decides, given the alerts the rule evaluator reports and an
injected ``now`` (Unix epoch seconds, because the state outlives a process):

* **grouping** -- alerts with equal values of the route's ``group_by`` labels
  share one aggregation group; a new group waits ``group_wait_s`` before its
  first notification, then is re-examined every ``group_interval_s``; an
  unchanged group is re-sent after ``repeat_interval_s``;
* **deduplication** -- per (group, receiver) a notification log remembers
  which alerts were last sent firing and resolved; a flush notifies only when
  a new alert fires, an alert resolves, or the repeat interval has passed
  (Alertmanager's ``DedupStage.needsUpdate``, with ``send_resolved: true``);
* **inhibition** -- a firing source alert mutes target alerts whose
  ``equal`` labels have the same values (an alert never inhibits itself);
* **silences** -- label matchers (``=``, ``!=``, ``=~``, ``!~``, regexes
  anchored as in Alertmanager) with a start and an end.

:func:`step` is the whole cycle: :func:`ingest` the current alerts, then
:func:`flush` groups that are due. It returns the new :class:`NotifierState`
and the :class:`Notification` values to deliver; the shell
(``lichen.observe.notifications``) persists both in one transaction, so a
notification is never lost between the decision and its delivery.

Input contract: the caller passes every alert that is *firing* now (and may
pass resolved ones, ``ends_at <= now``). A previously seen alert that is
absent from the input is resolved at ``now``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MATCH_OPS = ("=~", "!~", "!=", "=")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)
ROOT_ROUTE_KEY = "{}"
ALL_LABELS = "..."

# ------------------------------------------------------------------ labels


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's label-set fingerprint: FNV-1a 64 over sorted name/value pairs.

    Equal to Prometheus' ``model.LabelSet.Fingerprint()`` printed as 16 hex digits.
    """
    h = 14695981039346656037
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass(frozen=True)
class Matcher:
    """One label matcher; a missing label matches as the empty string."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in MATCH_OPS:
            raise ValueError(f"unknown matcher operator {self.op!r}: expected one of {', '.join(MATCH_OPS)}")
        if not _LABEL_NAME.fullmatch(self.name):
            raise ValueError(f"invalid label name {self.name!r}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r} in matcher for {self.name!r}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Matcher:
        return cls(data["name"], data["op"], data["value"])


def parse_matcher(text: str) -> Matcher:
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``; the value may be quoted."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(f"invalid matcher {text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher(name, op, value)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


# ------------------------------------------------------------------ alerts


@dataclass(frozen=True)
class Alert:
    """One alert instance as Alertmanager sees it. Times are epoch seconds."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float | None = None
    generator_url: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    def resolved(self, now: float) -> bool:
        return self.ends_at is not None and self.ends_at <= now

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "generator_url": self.generator_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            labels=dict(data["labels"]),
            annotations=dict(data.get("annotations") or {}),
            starts_at=float(data.get("starts_at") or 0.0),
            ends_at=None if data.get("ends_at") is None else float(data["ends_at"]),
            generator_url=str(data.get("generator_url") or ""),
        )


# ---------------------------------------------------------------- silences


@dataclass(frozen=True)
class Silence:
    """Mutes every alert whose labels match all ``matchers`` while active."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def state(self, now: float) -> str:
        """``pending`` before its start, ``active``, or ``expired`` from its end on."""
        if now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], now: float) -> list[str]:
    """Ids of the active silences that mute ``labels``."""
    return [s.id for s in silences if s.mutes(labels, now)]


# -------------------------------------------------------------- inhibition


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: Any) -> InhibitRule:
        """From ``ObservabilitySpec.inhibit_rules`` items: each value is an equality matcher."""
        return cls(
            source=tuple(Matcher(k, "=", v) for k, v in sorted(spec.source_matchers.items())),
            target=tuple(Matcher(k, "=", v) for k, v in sorted(spec.target_matchers.items())),
            equal=tuple(spec.equal),
        )


def inhibited(alerts: Sequence[Alert], rules: Sequence[InhibitRule], now: float) -> set[str]:
    """Fingerprints of the alerts muted by a firing source alert under some rule."""
    muted: set[str] = set()
    firing = [a for a in alerts if not a.resolved(now)]
    for rule in rules:
        sources = [a for a in firing if matches_all(rule.source, a.labels)]
        if not sources:
            continue
        for alert in alerts:
            if not matches_all(rule.target, alert.labels):
                continue
            two_sided = matches_all(rule.source, alert.labels)
            for source in sources:
                if two_sided and matches_all(rule.target, source.labels):
                    continue  # an alert matching both sides never inhibits one like it
                if source.fingerprint == alert.fingerprint:
                    continue
                if all(source.labels.get(n, "") == alert.labels.get(n, "") for n in rule.equal):
                    muted.add(alert.fingerprint)
                    break
    return muted


# ------------------------------------------------------------------ routing


@dataclass(frozen=True)
class RouteConfig:
    group_by: tuple[str, ...] = ("alertname", "service")
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0

    @classmethod
    def from_spec(cls, spec: Any) -> RouteConfig:
        """From ``ObservabilitySpec.route`` (a ``NotificationRouteSpec``)."""
        return cls(tuple(spec.group_by), spec.group_wait_s, spec.group_interval_s, spec.repeat_interval_s)

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if ALL_LABELS in self.group_by:
            return dict(labels)
        return {n: labels[n] for n in self.group_by if n in labels}


def group_key(group_labels: Mapping[str, str]) -> str:
    """Alertmanager's group key for the root route, e.g. ``{}:{alertname="X", service="api"}``."""
    inner = ", ".join(f'{k}="{group_labels[k]}"' for k in sorted(group_labels))
    return f"{ROOT_ROUTE_KEY}:{{{inner}}}"


# -------------------------------------------------------------------- state


@dataclass(frozen=True)
class LogEntry:
    """What one receiver was last told about one group (Alertmanager's nflog entry)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    sent_at: float


@dataclass(frozen=True)
class Group:
    key: str
    labels: Mapping[str, str]
    alerts: Mapping[str, Alert]
    created_at: float
    next_flush_at: float
    has_flushed: bool = False
    log: Mapping[str, LogEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class NotifierState:
    groups: Mapping[str, Group] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            key: {
                "labels": dict(g.labels),
                "alerts": {fp: a.to_dict() for fp, a in g.alerts.items()},
                "created_at": g.created_at,
                "next_flush_at": g.next_flush_at,
                "has_flushed": g.has_flushed,
                "log": {
                    r: {"firing": sorted(e.firing), "resolved": sorted(e.resolved), "sent_at": e.sent_at}
                    for r, e in g.log.items()
                },
            }
            for key, g in self.groups.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotifierState:
        groups = {}
        for key, g in data.items():
            groups[key] = Group(
                key=key,
                labels=dict(g["labels"]),
                alerts={fp: Alert.from_dict(a) for fp, a in g["alerts"].items()},
                created_at=float(g["created_at"]),
                next_flush_at=float(g["next_flush_at"]),
                has_flushed=bool(g["has_flushed"]),
                log={
                    r: LogEntry(frozenset(e["firing"]), frozenset(e["resolved"]), float(e["sent_at"]))
                    for r, e in g["log"].items()
                },
            )
        return cls(groups)

    def alerts(self) -> list[Alert]:
        return [a for g in self.groups.values() for a in g.alerts.values()]


@dataclass(frozen=True)
class Notification:
    """One message for one receiver about one group, as of ``at``."""

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    status: str  # "firing" if any alert in it fires, else "resolved"
    alerts: tuple[Alert, ...]
    at: float

    def alert_status(self, alert: Alert) -> str:
        return "resolved" if alert.resolved(self.at) else "firing"

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


# ------------------------------------------------------------------- cycle


def ingest(state: NotifierState, alerts: Iterable[Alert], now: float, route: RouteConfig) -> NotifierState:
    """Merge the current alerts into their groups; resolve known alerts that are absent."""
    groups: dict[str, Group] = {k: replace(g, alerts=dict(g.alerts)) for k, g in state.groups.items()}
    seen: set[str] = set()
    for alert in alerts:
        fp = alert.fingerprint
        seen.add(fp)
        labels = route.group_labels(alert.labels)
        key = group_key(labels)
        group = groups.get(key)
        if group is None:
            group = Group(key, labels, {}, created_at=now, next_flush_at=now + route.group_wait_s)
        if not group.has_flushed and not alert.resolved(now) and alert.starts_at + route.group_wait_s <= now:
            # Alertmanager flushes a fresh group at once when its alert is already older than group_wait.
            group = replace(group, next_flush_at=min(group.next_flush_at, now))
        group.alerts[fp] = alert  # type: ignore[index]
        groups[key] = group
    for group in groups.values():
        for fp, alert in list(group.alerts.items()):
            if fp not in seen and not alert.resolved(now):
                group.alerts[fp] = replace(alert, ends_at=now)  # type: ignore[index]
    return NotifierState(groups)


def _needs_update(entry: LogEntry | None, firing: set[str], resolved: set[str], now: float, repeat_s: float) -> bool:
    if entry is None:
        return bool(firing)
    if not firing:
        return bool(entry.firing)
    if not firing <= entry.firing:
        return True
    if not resolved <= entry.resolved:
        return True
    return entry.sent_at + repeat_s <= now


def flush(
    state: NotifierState,
    now: float,
    *,
    route: RouteConfig,
    receivers: Sequence[str],
    silences: Sequence[Silence] = (),
    inhibit_rules: Sequence[InhibitRule] = (),
) -> tuple[NotifierState, list[Notification]]:
    """Examine every group whose flush time has come; decide what each receiver is told."""
    all_alerts = state.alerts()
    muted = inhibited(all_alerts, inhibit_rules, now)
    notifications: list[Notification] = []
    groups: dict[str, Group] = {}
    for key, group in state.groups.items():
        if now < group.next_flush_at:
            groups[key] = group
            continue
        visible = [
            a
            for fp, a in sorted(group.alerts.items(), key=lambda kv: (kv[1].starts_at, kv[0]))
            if fp not in muted and not silenced_by(a.labels, silences, now)
        ]
        firing = {a.fingerprint for a in visible if not a.resolved(now)}
        resolved = {a.fingerprint for a in visible if a.resolved(now)}
        log = dict(group.log)
        for receiver in receivers:
            if not visible or not _needs_update(log.get(receiver), firing, resolved, now, route.repeat_interval_s):
                continue
            notifications.append(
                Notification(
                    receiver=receiver,
                    group_key=key,
                    group_labels=dict(group.labels),
                    status="firing" if firing else "resolved",
                    alerts=tuple(visible),
                    at=now,
                )
            )
            log[receiver] = LogEntry(frozenset(firing), frozenset(resolved), now)
        # Resolved alerts leave the group once a flush has handled them.
        remaining = {fp: a for fp, a in group.alerts.items() if not a.resolved(now)}
        if not remaining:
            continue  # an empty group is destroyed, as in Alertmanager
        groups[key] = replace(
            group, alerts=remaining, next_flush_at=now + route.group_interval_s, has_flushed=True, log=log
        )
    return NotifierState(groups), notifications


def step(
    state: NotifierState,
    alerts: Iterable[Alert],
    now: float,
    *,
    route: RouteConfig,
    receivers: Sequence[str],
    silences: Sequence[Silence] = (),
    inhibit_rules: Sequence[InhibitRule] = (),
) -> tuple[NotifierState, list[Notification]]:
    """One notifier cycle: :func:`ingest` then :func:`flush`."""
    merged = ingest(state, alerts, now, route)
    return flush(merged, now, route=route, receivers=receivers, silences=silences, inhibit_rules=inhibit_rules)


def next_flush_at(state: NotifierState) -> float | None:
    """When the earliest group is next due (for a shell that sleeps until then)."""
    return min((g.next_flush_at for g in state.groups.values()), default=None)


# ------------------------------------------------ pushing to an Alertmanager


@dataclass(frozen=True)
class PushState:
    """What was last pushed to a real Alertmanager (which does its own grouping)."""

    alerts: Mapping[str, Alert] = field(default_factory=dict)
    last_push_at: float | None = None
    last_firing: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": {fp: a.to_dict() for fp, a in self.alerts.items()},
            "last_push_at": self.last_push_at,
            "last_firing": sorted(self.last_firing),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PushState:
        return cls(
            alerts={fp: Alert.from_dict(a) for fp, a in data.get("alerts", {}).items()},
            last_push_at=data.get("last_push_at"),
            last_firing=frozenset(data.get("last_firing", ())),
        )


def plan_push(
    state: PushState,
    alerts: Iterable[Alert],
    now: float,
    *,
    resend_s: float = 60.0,
    resolved_retention_s: float = 900.0,
) -> tuple[PushState, list[Alert] | None]:
    """Prometheus' way of feeding an Alertmanager: push all alerts when the firing
    set changes or every ``resend_s``; firing alerts carry ``ends_at = now + 4 ×
    resend_s`` (so they expire if Lichen stops), resolved ones are re-sent for
    ``resolved_retention_s``. Returns the new state and the alerts to POST, or None.
    """
    known = dict(state.alerts)
    seen: set[str] = set()
    for alert in alerts:
        seen.add(alert.fingerprint)
        known[alert.fingerprint] = alert
    for fp, alert in list(known.items()):
        if fp not in seen and not alert.resolved(now):
            known[fp] = replace(alert, ends_at=now)
        elif alert.resolved(now) and alert.ends_at is not None and alert.ends_at + resolved_retention_s < now:
            del known[fp]
    firing = frozenset(fp for fp, a in known.items() if not a.resolved(now))
    changed = firing != state.last_firing
    due = state.last_push_at is None or state.last_push_at + resend_s <= now
    if not known or not (changed or due):
        return replace(state, alerts=known, last_firing=firing if not known else state.last_firing), None
    batch = [a if a.resolved(now) else replace(a, ends_at=now + 4 * resend_s) for _, a in sorted(known.items())]
    return PushState(known, now, firing), batch
