"""Alert-driven remediation decisions (lichen.control.remediation) on plain data: matching, once per firing,
cooldown, the action budget, the minimum available, rollback windows, autoscaled services, dry runs, and the
default pack."""

from __future__ import annotations

from lichen.control.remediation import FiringAlert, ServiceView, Taken, decide, rules_of
from lichen.spec.remediations import RemediationSpec

NOW = 10_000.0


def spec(*rules: dict, **settings: object) -> RemediationSpec:
    return RemediationSpec.model_validate({"defaults": False, "rules": list(rules), **settings})


def view(name: str = "api", **fields: object) -> ServiceView:
    values = {"desired": 3, "ready": 3, "min_available": 3 - 0, "previous_revision": "old",
              "rollout_started_at": NOW - 60, "replicas": ("api-a-0", "api-a-1", "api-a-2"), **fields}
    return ServiceView(name=name, **values)  # type: ignore[arg-type]


def alert(name: str = "ApiErrors", fired_at: float = NOW - 5, **labels: str) -> FiringAlert:
    return FiringAlert(name, {"service": "api", **labels}, fired_at)


def test_a_matching_alert_asks_for_its_action_once_per_firing() -> None:
    rules = spec({"alert": "ApiErrors", "action": "rollback"})
    first = decide([alert()], rules, {"api": view()}, [], NOW)
    (action,) = first.actions
    assert (action.kind, action.service) == ("rollback", "api")
    assert action.reason == "ApiErrors{service='api'} is firing: roll api back to revision old"
    taken = [action.taken(NOW)]
    assert decide([alert()], rules, {"api": view()}, taken, NOW + 1).actions == ()  # the same firing: done
    again = decide([alert(fired_at=NOW + 500)], rules, {"api": view()}, taken, NOW + 600)
    assert [a.kind for a in again.actions] == ["rollback"]  # resolved and fired anew, past the cooldown


def test_labels_must_match_and_the_first_matching_rule_owns_the_alert() -> None:
    rules = spec({"alert": "ApiErrors", "labels": {"severity": "page"}, "action": "scale_up", "scale_by": 2},
                 {"alert": "ApiErrors", "action": "rollback"})
    paged = decide([alert(severity="page")], rules, {"api": view()}, [], NOW)
    assert [(a.kind, a.scale_by) for a in paged.actions] == [("scale_up", 2)]
    assert "scale api from 3 to 5" in paged.actions[0].reason
    ticket = decide([alert(severity="ticket")], rules, {"api": view()}, [], NOW)
    assert [a.kind for a in ticket.actions] == ["rollback"]
    assert decide([alert("Other")], rules, {"api": view()}, [], NOW).actions == ()


def test_cooldown_and_the_action_budget_hold_actions_back_and_say_why() -> None:
    rules = spec({"alert": "ApiErrors", "action": "rollback", "cooldown_s": 300}, max_actions=2, window_s=600)
    recent = [Taken(NOW - 100, 0, "api", (("x", "y"),), NOW - 200)]
    cooled = decide([alert()], rules, {"api": view()}, recent, NOW)
    assert cooled.actions == () and "cooldown: this rule acted on api 100 s ago (cooldown_s 300)" in cooled.held[0][2]
    busy = [Taken(NOW - 10, 5, "web", (), 0.0), Taken(NOW - 20, 6, "web", (), 0.0)]
    capped = decide([alert()], rules, {"api": view()}, busy, NOW)
    assert capped.actions == () and capped.held[0][2] == "max_actions 2 within 600 s reached"
    old = [Taken(NOW - 700, 5, "web", (), 0.0), Taken(NOW - 800, 6, "web", (), 0.0)]
    assert len(decide([alert()], rules, {"api": view()}, old, NOW).actions) == 1  # outside the window


def test_a_restart_never_leaves_the_service_below_its_minimum_available() -> None:
    rules = spec({"alert": "Slow", "action": "restart_replica"})
    ok = decide([alert("Slow", replica="api-a-1")], rules, {"api": view(min_available=2)}, [], NOW)
    assert [(a.kind, a.replica) for a in ok.actions] == [("restart_replica", "api-a-1")]
    short = decide([alert("Slow", replica="api-a-1")], rules, {"api": view(ready=2, min_available=2)}, [], NOW)
    assert short.actions == () and "would fall below its minimum available (2 ready, at least 2 must stay)" in \
        short.held[0][2]
    single = decide([alert("Slow", replica="api-a-0")], rules, {"api": view(ready=1, min_available=0)}, [], NOW)
    assert single.actions == ()  # the last ready replica is never taken away
    nameless = decide([alert("Slow")], rules, {"api": view()}, [], NOW)
    assert nameless.held[0][2] == "the alert names no replica of the service"


def test_a_rollback_needs_somewhere_to_go_and_a_recent_rollout_when_asked() -> None:
    rules = spec({"alert": "ApiErrors", "action": "rollback", "within_s_of_rollout": 900})
    assert decide([alert()], rules, {"api": view(previous_revision="")}, [], NOW).held[0][2] == \
        "api has no previous revision to go back to"
    late = decide([alert()], rules, {"api": view(rollout_started_at=NOW - 1000)}, [], NOW)
    assert late.held[0][2] == "its last rollout began 1000 s ago (within_s_of_rollout 900)"
    canary = decide([alert()], rules, {"api": view(previous_revision="", canary=True)}, [], NOW)
    assert canary.actions[0].reason.endswith("abort the canary of api")


def test_scale_up_leaves_an_autoscaled_service_alone_and_dry_run_marks_every_action() -> None:
    rules = spec({"alert": "ApiErrors", "action": "scale_up"}, dry_run=True)
    assert decide([alert()], rules, {"api": view(autoscaled=True)}, [], NOW).held[0][2] == \
        "api is autoscaled: its count is the autoscaler's"
    (dry,) = decide([alert()], rules, {"api": view()}, [], NOW).actions
    assert dry.dry_run and dry.reason.endswith("(dry run: nothing done)")
    assert decide([alert(service="gone")], rules, {"api": view()}, [], NOW).held[0][2] == "no service named 'gone' runs"


def test_the_default_pack_rolls_back_a_failing_rollout_within_15_minutes() -> None:
    defaults = RemediationSpec()
    assert [r.alert for r in rules_of(defaults)] == ["LichenErrorBudgetBurn", "LichenHighErrorRatio"]
    fast_burn = alert("LichenErrorBudgetBurn", severity="page")
    assert [a.kind for a in decide([fast_burn], defaults, {"api": view()}, [], NOW).actions] == ["rollback"]
    slow_burn = alert("LichenErrorBudgetBurn", severity="ticket")
    assert decide([slow_burn], defaults, {"api": view()}, [], NOW).actions == ()
    stale = decide([alert("LichenHighErrorRatio")], defaults, {"api": view(rollout_started_at=NOW - 3600)}, [], NOW)
    assert stale.actions == () and "within_s_of_rollout 900" in stale.held[0][2]
    assert rules_of(RemediationSpec(enabled=False)) == () and rules_of(RemediationSpec(defaults=False)) == ()


def test_a_rollout_made_while_the_alert_was_already_firing_is_not_rolled_back() -> None:
    defaults = RemediationSpec()
    old_alert = FiringAlert("LichenHighErrorRatio", {"service": "api"}, fired_at=NOW - 600, active_at=NOW - 900)
    fix = decide([old_alert], defaults, {"api": view(rollout_started_at=NOW - 1)}, [], NOW)  # the hotfix
    assert fix.actions == () and fix.held[0][2] == "the alert began 899 s before api's last rollout: not its cause"
    new_alert = FiringAlert("LichenHighErrorRatio", {"service": "api"}, fired_at=NOW - 5, active_at=NOW - 30)
    assert [a.kind for a in decide([new_alert], defaults, {"api": view(rollout_started_at=NOW - 60)}, [],
                                   NOW).actions] == ["rollback"]
