"""Alertmanager semantics: grouping, dedup, repeat, resolve, silences, inhibition."""

from __future__ import annotations

import json

import pytest

from lichen.control.notifying import (
    Alert,
    InhibitRule,
    Matcher,
    NotifierState,
    RouteConfig,
    Silence,
    fingerprint,
    group_key,
    inhibited,
    next_flush_at,
    parse_matcher,
    step,
)

ROUTE = RouteConfig(group_by=("alertname", "service"), group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)
T0 = 1_700_000_000.0


def alert(name: str = "HighErrorRatio", service: str = "api", starts: float = T0, **labels: str) -> Alert:
    return Alert(labels={"alertname": name, "service": service, **labels}, annotations={"summary": name}, starts_at=starts)


class Run:
    """Drives step() over time, keeping state, collecting notifications."""

    def __init__(self, receivers=("hook",), route=ROUTE, silences=(), inhibit=()):
        self.state = NotifierState()
        self.receivers, self.route, self.silences, self.inhibit = receivers, route, silences, inhibit

    def at(self, now: float, alerts):
        self.state, sent = step(
            self.state,
            alerts,
            now,
            route=self.route,
            receivers=self.receivers,
            silences=self.silences,
            inhibit_rules=self.inhibit,
        )
        return sent


def test_group_wait_delays_the_first_notification_and_batches_alerts() -> None:
    run = Run()
    a1, a2 = alert(replica="api-1"), alert(replica="api-2", starts=T0 + 10)
    assert run.at(T0, [a1]) == []
    assert run.at(T0 + 10, [a1, a2]) == []
    assert run.at(T0 + 29.9, [a1, a2]) == []
    sent = run.at(T0 + 30, [a1, a2])
    assert len(sent) == 1
    note = sent[0]
    assert note.status == "firing" and note.receiver == "hook"
    assert {a.labels["replica"] for a in note.alerts} == {"api-1", "api-2"}
    assert note.group_key == '{}:{alertname="HighErrorRatio", service="api"}'
    assert note.common_labels() == {"alertname": "HighErrorRatio", "service": "api"}
    assert next_flush_at(run.state) == T0 + 330


def test_groups_split_by_group_by_labels() -> None:
    alerts = [alert(service="api"), alert(service="web"), alert(name="ReplicaDown", service="api")]
    run = Run()
    run.at(T0, alerts)
    sent = run.at(T0 + 30, alerts)
    assert sorted(n.group_key for n in sent) == sorted(
        group_key({"alertname": a.labels["alertname"], "service": a.labels["service"]}) for a in alerts
    )


def test_new_alert_in_flushed_group_waits_for_group_interval_then_repeat() -> None:
    run = Run()
    a1, a2 = alert(replica="1"), alert(replica="2", starts=T0 + 100)
    run.at(T0, [a1])
    assert len(run.at(T0 + 30, [a1])) == 1
    assert run.at(T0 + 100, [a1, a2]) == []  # waits for the group interval
    assert run.at(T0 + 329, [a1, a2]) == []
    sent = run.at(T0 + 330, [a1, a2])
    assert len(sent) == 1 and len(sent[0].alerts) == 2
    # Nothing changed: silent at each group interval until the repeat interval passes.
    assert run.at(T0 + 630, [a1, a2]) == []
    assert run.at(T0 + 3630, [a1, a2]) == []  # 3300 s since the last send
    assert len(run.at(T0 + 3930, [a1, a2])) == 1  # 3600 s since the last send


def test_resolution_is_notified_and_the_group_is_dropped() -> None:
    run = Run()
    a1, a2 = alert(replica="1"), alert(replica="2")
    run.at(T0, [a1, a2])
    run.at(T0 + 30, [a1, a2])
    assert run.at(T0 + 200, [a1]) == []  # a2 resolved, reported at the next interval
    sent = run.at(T0 + 330, [a1])
    assert len(sent) == 1 and sent[0].status == "firing"
    statuses = {a.labels["replica"]: sent[0].alert_status(a) for a in sent[0].alerts}
    assert statuses == {"1": "firing", "2": "resolved"}
    resolved_a2 = next(a for a in sent[0].alerts if a.labels["replica"] == "2")
    assert resolved_a2.ends_at == T0 + 200
    assert run.at(T0 + 400, []) == []
    sent = run.at(T0 + 630, [])
    assert len(sent) == 1 and sent[0].status == "resolved"
    assert [a.labels["replica"] for a in sent[0].alerts] == ["1"]
    assert run.state.groups == {}


def test_fired_and_resolved_inside_group_wait_is_never_sent() -> None:
    run = Run()
    run.at(T0, [alert()])
    assert run.at(T0 + 10, []) == []
    assert run.at(T0 + 30, []) == []
    assert run.state.groups == {}


def test_alert_older_than_group_wait_flushes_a_fresh_group_at_once() -> None:
    run = Run()
    sent = run.at(T0 + 100, [alert(starts=T0)])
    assert len(sent) == 1


def test_every_receiver_gets_its_own_notification_and_log() -> None:
    run = Run(receivers=("hook", "log"))
    run.at(T0, [alert()])
    sent = run.at(T0 + 30, [alert()])
    assert sorted(n.receiver for n in sent) == ["hook", "log"]


def test_silence_with_regex_mutes_until_it_expires() -> None:
    silence = Silence("s1", (parse_matcher("service=~ap.*"), parse_matcher('alertname="HighErrorRatio"')), T0, T0 + 500)
    run = Run(silences=[silence])
    api, web = alert(service="api"), alert(service="web")
    run.at(T0, [api, web])
    sent = run.at(T0 + 30, [api, web])
    assert [n.group_labels["service"] for n in sent] == ["web"]
    assert run.at(T0 + 330, [api, web]) == []
    sent = run.at(T0 + 630, [api, web])  # silence ended at T0+500
    assert [n.group_labels["service"] for n in sent] == ["api"]


def test_silence_states() -> None:
    silence = Silence("s", (Matcher("service", "=", "api"),), T0 + 10, T0 + 20)
    assert [silence.state(t) for t in (T0, T0 + 10, T0 + 19.9, T0 + 20)] == ["pending", "active", "active", "expired"]
    assert silence.mutes({"service": "api"}, T0 + 15)
    assert not silence.mutes({"service": "web"}, T0 + 15)
    assert not silence.mutes({"service": "api"}, T0 + 25)


def test_inhibition_needs_equal_labels_and_a_firing_source() -> None:
    rule = InhibitRule(
        source=(Matcher("severity", "=", "critical"),), target=(Matcher("severity", "=", "warning"),), equal=("service",)
    )
    down = alert(name="ReplicaDown", service="api", severity="critical")
    errs_api = alert(service="api", severity="warning")
    errs_web = alert(service="web", severity="warning")
    muted = inhibited([down, errs_api, errs_web], [rule], T0)
    assert muted == {errs_api.fingerprint}
    resolved_down = Alert(down.labels, starts_at=T0, ends_at=T0 - 1)
    assert inhibited([resolved_down, errs_api], [rule], T0) == set()


def test_alert_matching_both_sides_does_not_inhibit_itself_or_its_kind() -> None:
    rule = InhibitRule(source=(Matcher("severity", "=", "critical"),), target=(Matcher("severity", "=~", ".+"),))
    a = alert(service="api", severity="critical")
    b = alert(service="web", severity="critical")
    assert inhibited([a, b], [rule], T0) == set()


def test_inhibited_alert_is_not_notified() -> None:
    rule = InhibitRule(
        source=(Matcher("alertname", "=", "ReplicaDown"),), target=(Matcher("alertname", "=", "HighErrorRatio"),), equal=("service",)
    )
    run = Run(inhibit=[rule])
    alerts = [alert(name="ReplicaDown"), alert(name="HighErrorRatio")]
    run.at(T0, alerts)
    sent = run.at(T0 + 30, alerts)
    assert [n.group_labels["alertname"] for n in sent] == ["ReplicaDown"]


def test_state_survives_json_round_trip() -> None:
    run = Run()
    a1 = alert(replica="1")
    run.at(T0, [a1])
    run.at(T0 + 30, [a1])
    restored = NotifierState.from_dict(json.loads(json.dumps(run.state.to_dict())))
    assert restored == NotifierState.from_dict(run.state.to_dict())
    run.state = restored
    assert run.at(T0 + 330, [a1]) == []  # the log survived: no duplicate send
    assert len(run.at(T0 + 630, [])) == 1


def test_fingerprint_is_order_independent_and_matches_fnv_of_empty_set() -> None:
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64 offset basis, as Prometheus
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    assert len(fingerprint({"a": "1"})) == 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service=api", Matcher("service", "=", "api")),
        ('service!="api"', Matcher("service", "!=", "api")),
        ("severity=~crit.*", Matcher("severity", "=~", "crit.*")),
        (" team !~ 'a|b' ", Matcher("team", "!~", "a|b")),
    ],
)
def test_parse_matcher(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize("text", ["service", "1x=a", "a=~(", "=x"])
def test_parse_matcher_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_matcher(text)


def test_regex_is_anchored_and_missing_label_is_empty() -> None:
    assert not Matcher("service", "=~", "ap").matches({"service": "api"})
    assert Matcher("team", "=", "").matches({"service": "api"})
    assert Matcher("team", "!~", ".+").matches({})
