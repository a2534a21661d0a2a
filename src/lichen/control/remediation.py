"""Alert-driven remediation: which repairs the firing alerts ask for, within the limits that keep them safe.

A pure function of plain data and ``now``: the firing alerts, the rules
(``remediation.rules`` and, with ``remediation.defaults``, :data:`DEFAULT_RULES`),
what each service looks like, and the actions already taken. Out come the
actions to take and, for every match that was held back, why.

Safety, in the order checked:

* **once per firing**: a rule acts on an alert once while it fires; it acts
  again only if the alert resolves and fires anew;
* **cooldown** per rule and service (``cooldown_s``);
* **at most ``max_actions``** within ``window_s``, all rules together (a
  dry run counts too, so it shows what the limits would allow);
* **never below the service's minimum available** (``replicas - max_unavailable``
  of its rollout settings, and at least 1) for a repair that takes a replica
  away (restart, drain);
* a rollback needs a revision to go back to, and with ``within_s_of_rollout``
  a rollout that began that recently; ``scale_up`` never touches an
  autoscaled service (its count is the autoscaler's);
* ``dry_run`` marks every action: the shell records it and does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lichen.spec.remediations import DEFAULT_RULES, RemediationRuleSpec, RemediationSpec


@dataclass(frozen=True)
class FiringAlert:
    name: str
    labels: Mapping[str, str]
    fired_at: float
    """when it started firing (wall seconds): one firing is one episode"""
    active_at: float | None = None
    """when its condition first held (pending; wall seconds): a rollout after it did not cause it"""

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({**self.labels, "alertname": self.name}.items()))

    def describe(self) -> str:
        shown = ",".join(f"{k}={v!r}" for k, v in sorted(self.labels.items()) if k not in ("alertname", "app"))
        return f"{self.name}{{{shown}}}"


@dataclass(frozen=True)
class ServiceView:
    name: str
    desired: int
    ready: int
    min_available: int
    previous_revision: str = ""
    rollout_started_at: float | None = None
    """wall seconds when its last rollout (rolling or canary) began"""
    canary: bool = False
    autoscaled: bool = False
    replicas: tuple[str, ...] = ()
    """its replicas' ids (a restart or drain names one of them)"""


@dataclass(frozen=True)
class Taken:
    """An action taken (or, in a dry run, recorded)."""

    at: float
    rule: int
    service: str
    alert_key: tuple[tuple[str, str], ...]
    fired_at: float


@dataclass(frozen=True)
class Action:
    kind: str
    service: str
    rule: int
    alert: FiringAlert
    reason: str
    replica: str = ""
    scale_by: int = 0
    job: str = ""
    dry_run: bool = False

    def taken(self, now: float) -> Taken:
        return Taken(now, self.rule, self.service, self.alert.key, self.alert.fired_at)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    held: tuple[tuple[FiringAlert, int, str], ...] = field(default=())
    """(alert, rule index, why not) for each match held back"""


def rules_of(spec: RemediationSpec) -> tuple[RemediationRuleSpec, ...]:
    """The rules in force: the spec's, then the default pack (a spec rule for the same alert comes first)."""
    if not spec.enabled:
        return ()
    return (*spec.rules, *(DEFAULT_RULES if spec.defaults else ()))


def _matches(rule: RemediationRuleSpec, alert: FiringAlert) -> bool:
    return rule.alert == alert.name and all(alert.labels.get(k) == v for k, v in rule.labels.items())


def _blocked(rule: RemediationRuleSpec, alert: FiringAlert, view: ServiceView | None, now: float) -> str | None:
    """Why this rule cannot act on this service now (None: it can)."""
    if view is None:
        service = alert.labels.get("service")
        return "the alert names no service" if not service else f"no service named {service!r} runs"
    if rule.action in ("restart_replica", "drain_replica"):
        replica = alert.labels.get("replica")
        if not replica or replica not in view.replicas:
            return "the alert names no replica of the service" if not replica else f"no replica {replica!r} runs"
        if view.ready - 1 < max(1, view.min_available):
            return (f"{view.name} would fall below its minimum available ({view.ready} ready, at least "
                    f"{max(1, view.min_available)} must stay)")
    if rule.action == "rollback":
        if not view.previous_revision and not view.canary:
            return f"{view.name} has no previous revision to go back to"
        if rule.within_s_of_rollout is not None:
            started = view.rollout_started_at
            if started is None or now - started > rule.within_s_of_rollout:
                ago = "no rollout seen" if started is None else f"its last rollout began {now - started:.0f} s ago"
                return f"{ago} (within_s_of_rollout {rule.within_s_of_rollout:g})"
            began = alert.active_at if alert.active_at is not None else alert.fired_at
            if began < started:  # failing before the rollout: a fix being rolled out must not be rolled back
                return f"the alert began {started - began:.0f} s before {view.name}'s last rollout: not its cause"
    if rule.action == "scale_up" and view.autoscaled:
        return f"{view.name} is autoscaled: its count is the autoscaler's"
    return None


def decide(alerts: Sequence[FiringAlert], spec: RemediationSpec, services: Mapping[str, ServiceView],
           taken: Sequence[Taken], now: float) -> Decision:
    """The actions the firing alerts ask for now, and why any other match waits."""
    rules = rules_of(spec)
    recent = [t for t in taken if t.at > now - spec.window_s]
    budget = spec.max_actions - len(recent)
    actions: list[Action] = []
    held: list[tuple[FiringAlert, int, str]] = []
    acted: set[tuple[str, str]] = set()  # (service, action kind) decided this round: one of each
    for alert in sorted(alerts, key=lambda a: (a.fired_at, a.name)):
        for index, rule in enumerate(rules):
            if not _matches(rule, alert):
                continue
            if any(t.rule == index and t.alert_key == alert.key and t.fired_at == alert.fired_at for t in taken):
                break  # acted on this firing already: the first matching rule owns the alert
            view = services.get(alert.labels.get("service", ""))
            why = _blocked(rule, alert, view, now)
            if why is None:
                assert view is not None
                last = max((t.at for t in taken if t.rule == index and t.service == view.name), default=None)
                if last is not None and now - last < rule.cooldown_s:
                    why = f"cooldown: this rule acted on {view.name} {now - last:.0f} s ago (cooldown_s {rule.cooldown_s:g})"
                elif (view.name, rule.action) in acted:
                    why = f"{rule.action} of {view.name} is already decided this round"
                elif budget <= 0:
                    why = f"max_actions {spec.max_actions} within {spec.window_s:g} s reached"
            if why is not None:
                held.append((alert, index, why))
                break
            assert view is not None
            budget -= 1
            acted.add((view.name, rule.action))
            actions.append(_action(rule, index, alert, view, spec.dry_run))
            break  # one rule per alert: the first that matches
    return Decision(tuple(actions), tuple(held))


def _action(rule: RemediationRuleSpec, index: int, alert: FiringAlert, view: ServiceView, dry_run: bool) -> Action:
    replica = alert.labels.get("replica", "") if rule.action in ("restart_replica", "drain_replica") else ""
    what = {
        "restart_replica": f"restart replica {replica} of {view.name}",
        "drain_replica": f"drain replica {replica} of {view.name} (a new one replaces it)",
        "rollback": (f"abort the canary of {view.name}" if view.canary
                     else f"roll {view.name} back to revision {view.previous_revision}"),
        "scale_up": f"scale {view.name} from {view.desired} to {view.desired + rule.scale_by}",
        "run_job": f"run job {rule.job}",
    }[rule.action]
    reason = f"{alert.describe()} is firing: {what}" + (" (dry run: nothing done)" if dry_run else "")
    return Action(rule.action, view.name, index, alert, reason, replica=replica,
                  scale_by=rule.scale_by if rule.action == "scale_up" else 0, job=rule.job or "", dry_run=dry_run)
