"""Notification delivery to a real webhook receiver on loopback, with a durable outbox."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from lichen.control.notifying import Alert, RouteConfig
from lichen.errors import ConfigError, StateError
from lichen.logs import as_event
from lichen.observe.notifications import (
    NotificationStore,
    Notifier,
    Receiver,
    coerce_alert,
    parse_rfc3339,
)
from lichen.observe.silences import SilenceStore, state_db_path
from webhook_receivers import WebhookReceiver

T0 = 1_750_000_000.0
ROUTE = RouteConfig(group_by=("alertname", "service"), group_wait_s=10, group_interval_s=60, repeat_interval_s=3600)


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def make_notifier(db: Path, receivers: list[Receiver], **options) -> Notifier:
    return Notifier(
        receivers=receivers,
        store=NotificationStore(db),
        silences=SilenceStore(db),
        route=ROUTE,
        external_url="http://127.0.0.1:7070",
        timeout_s=2.0,
        **options,
    )


def firing(service: str = "api", replica: str = "api-1") -> Alert:
    return Alert(
        labels={"alertname": "HighErrorRatio", "service": service, "replica": replica, "severity": "warning"},
        annotations={"summary": f"{service} returns 5xx"},
        starts_at=T0,
        generator_url="http://127.0.0.1:7070/graph",
    )


def run(coro):
    return asyncio.run(coro)


def test_webhook_gets_v4_payload_for_firing_then_resolved(tmp_path: Path, hook: WebhookReceiver) -> None:
    async def scenario():
        notifier = make_notifier(tmp_path / "state.db", [Receiver("hook", "webhook", hook.url)])
        try:
            assert (await notifier.process([firing()], T0)).notifications == []
            result = await notifier.process([firing()], T0 + 10)
            assert result.delivered == 1
            await notifier.process([], T0 + 30)
            result = await notifier.process([], T0 + 70)
            assert result.delivered == 1
        finally:
            await notifier.aclose()

    run(scenario())
    assert [path for path, _ in hook.posts] == ["/hook", "/hook"]
    first, second = (body for _, body in hook.posts)
    assert first["version"] == "4"
    assert first["status"] == "firing" and first["receiver"] == "hook"
    assert first["groupKey"] == '{}:{alertname="HighErrorRatio", service="api"}'
    assert first["groupLabels"] == {"alertname": "HighErrorRatio", "service": "api"}
    assert first["commonLabels"]["severity"] == "warning"
    assert first["commonAnnotations"] == {"summary": "api returns 5xx"}
    assert first["externalURL"] == "http://127.0.0.1:7070"
    (alert,) = first["alerts"]
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert parse_rfc3339(alert["startsAt"]) == T0
    assert alert["generatorURL"] == "http://127.0.0.1:7070/graph" and len(alert["fingerprint"]) == 16
    assert second["status"] == "resolved"
    assert second["alerts"][0]["status"] == "resolved"
    assert parse_rfc3339(second["alerts"][0]["endsAt"]) == T0 + 30
    assert second["alerts"][0]["fingerprint"] == alert["fingerprint"]


def test_receiver_down_then_up_gets_firing_and_resolved_in_order(tmp_path: Path, hook: WebhookReceiver) -> None:
    hook.stop()
    db = tmp_path / "state.db"

    async def scenario():
        notifier = make_notifier(db, [Receiver("hook", "webhook", hook.url)], backoff_base_s=1, backoff_max_s=8)
        try:
            await notifier.process([firing()], T0)
            result = await notifier.process([firing()], T0 + 10)
            assert result.retrying == 1 and result.delivered == 0
            (pending,) = notifier.store.pending()
            assert pending.attempts == 1 and "Connect" in (pending.last_error or "")
            assert (await notifier.process([firing()], T0 + 10.5)).retrying == 0  # backoff not over yet
            assert (await notifier.process([firing()], T0 + 11)).retrying == 1  # second failure: now 2 s
            await notifier.process([], T0 + 20)
            await notifier.process([], T0 + 70)  # resolved notification queued behind the firing one
            assert [p.payload["status"] for p in notifier.store.pending()] == ["firing", "resolved"]
            hook.start()
            result = await notifier.process([], T0 + 80)
            assert result.delivered == 1  # firing first; the resolved one waits its turn
            result = await notifier.process([], T0 + 81)
            assert result.delivered == 1
            assert notifier.store.pending() == []
        finally:
            await notifier.aclose()

    run(scenario())
    assert [body["status"] for _, body in hook.posts] == ["firing", "resolved"]


def test_restart_keeps_groups_log_and_outbox(tmp_path: Path, hook: WebhookReceiver) -> None:
    db = tmp_path / "state.db"
    receivers = [Receiver("hook", "webhook", hook.url)]

    async def first_life():
        notifier = make_notifier(db, receivers)
        await notifier.process([firing("api")], T0)
        assert (await notifier.process([firing("api")], T0 + 10)).delivered == 1
        hook.stop()
        await notifier.process([firing("api"), firing("web", "web-1")], T0 + 20)
        assert (await notifier.process([firing("api"), firing("web", "web-1")], T0 + 30)).retrying == 1
        await notifier.aclose()
        notifier.store.close()

    async def second_life():
        notifier = make_notifier(db, receivers)
        try:
            assert set(notifier.state().groups) == {
                '{}:{alertname="HighErrorRatio", service="api"}',
                '{}:{alertname="HighErrorRatio", service="web"}',
            }
            hook.start()
            result = await notifier.process([firing("api"), firing("web", "web-1")], T0 + 70)
            # the web notification left in the outbox is delivered; api is not re-sent (log kept)
            assert result.delivered == 1 and result.notifications == []
            await notifier.process([firing("web", "web-1")], T0 + 71)
            result = await notifier.process([firing("web", "web-1")], T0 + 130)
            assert [n.status for n in result.notifications] == ["resolved"]
        finally:
            await notifier.aclose()

    run(first_life())
    run(second_life())
    bodies = [body for _, body in hook.posts]
    assert [(b["groupLabels"]["service"], b["status"]) for b in bodies] == [
        ("api", "firing"),
        ("web", "firing"),
        ("api", "resolved"),
    ]


def test_silence_added_in_the_store_mutes_the_next_cycle(tmp_path: Path, hook: WebhookReceiver) -> None:
    db = tmp_path / "state.db"
    SilenceStore(db).add(['service=~"ap.*"'], starts_at=T0, ends_at=T0 + 3600, created_by="me", comment="deploy")

    async def scenario():
        notifier = make_notifier(db, [Receiver("hook", "webhook", hook.url)])
        try:
            alerts = [firing("api"), firing("web", "web-1")]
            await notifier.process(alerts, T0)
            assert (await notifier.process(alerts, T0 + 10)).delivered == 1
        finally:
            await notifier.aclose()

    run(scenario())
    assert [body["groupLabels"]["service"] for _, body in hook.posts] == ["web"]


def test_log_and_alertmanager_receivers(tmp_path: Path, hook: WebhookReceiver, caplog) -> None:
    am_url = f"http://127.0.0.1:{hook.port}"

    async def scenario():
        notifier = make_notifier(
            tmp_path / "state.db", [Receiver("log", "log"), Receiver("am", "alertmanager", am_url)], resend_s=60
        )
        try:
            with caplog.at_level(logging.WARNING, logger="lichen.alerts"):
                first = await notifier.process([firing()], T0)  # Alertmanager gets alerts at once
                second = await notifier.process([firing()], T0 + 10)  # the log after group_wait
            await notifier.process([firing()], T0 + 20)  # unchanged and not yet due: no push
            await notifier.process([], T0 + 30)  # resolved: pushed at once
            return first, second
        finally:
            await notifier.aclose()

    first, second = run(scenario())
    assert first.delivered == 1 and second.delivered == 1
    logged = [as_event(r).fields for r in caplog.records if as_event(r).name == "alert_notification"]
    assert logged and logged[0]["receiver"] == "log" and logged[0]["payload"]["version"] == "4"
    assert logged[0]["payload"]["alerts"][0]["labels"]["alertname"] == "HighErrorRatio"
    assert [path for path, _ in hook.posts] == ["/api/v2/alerts", "/api/v2/alerts"]
    pushed_firing, pushed_resolved = (body for _, body in hook.posts)
    assert pushed_firing[0]["labels"]["alertname"] == "HighErrorRatio"
    assert parse_rfc3339(pushed_firing[0]["endsAt"]) == T0 + 240  # expires unless re-sent
    assert parse_rfc3339(pushed_resolved[0]["endsAt"]) == T0 + 30


def test_coerce_alert_from_prometheus_api_item() -> None:
    item = {
        "labels": {"alertname": "X", "service": "api"},
        "annotations": {"summary": "s"},
        "state": "firing",
        "activeAt": "2025-06-15T14:40:00Z",
        "value": "1e+00",
    }
    alert = coerce_alert(item)
    assert alert is not None and alert.labels == {"alertname": "X", "service": "api"}
    assert alert.starts_at == parse_rfc3339("2025-06-15T14:40:00Z")
    assert coerce_alert({**item, "state": "pending"}) is None


def test_silence_store_crud_and_validation(tmp_path: Path) -> None:
    store = SilenceStore(tmp_path / "s.db")
    s = store.add(["alertname=ReplicaDown"], starts_at=T0, ends_at=T0 + 60, comment="c")
    assert store.get(s.id[:8]) == s
    assert [x.id for x in store.current(T0 + 1)] == [s.id]
    expired = store.expire(s.id, T0 + 5)
    assert expired.state(T0 + 5) == "expired" and store.current(T0 + 6) == []
    assert [x.id for x in store.list()] == [s.id]
    with pytest.raises(StateError):
        store.expire(s.id, T0 + 6)
    with pytest.raises(ConfigError):
        store.add(["team=~.*"], starts_at=T0, ends_at=T0 + 1)
    with pytest.raises(ConfigError):
        store.add(["alertname=X"], starts_at=T0, ends_at=T0)
    with pytest.raises(StateError):
        store.get("nope")


def test_state_db_path() -> None:
    assert state_db_path("sqlite:///.lichen/state.db", "/app") == "/app/.lichen/state.db"
    assert state_db_path("sqlite:////var/lib/lichen.db", "/app") == "/var/lib/lichen.db"
    with pytest.raises(ConfigError):
        state_db_path("postgres://x", "/app")


def test_rule_manager_alerts_flow_to_the_webhook(tmp_path: Path, hook: WebhookReceiver) -> None:
    """Real rule evaluation (for: 30s) -> notifier -> webhook, then recovery -> resolved."""
    from lichen.observe.promql import Engine
    from lichen.observe.rules import RuleManager
    from lichen.observe.series import SeriesStore

    store = SeriesStore()
    rules = RuleManager(store, Engine(store))
    rules.load_text(
        "groups:\n- name: t\n  interval: 5s\n  rules:\n  - alert: ApiDown\n    expr: up{service=\"api\"} == 0\n"
        "    for: 30s\n    labels: {severity: critical}\n"
        "    annotations: {summary: '{{ $labels.replica }} down ({{ $value }})'}\n"
    )
    labels = {"__name__": "up", "service": "api", "replica": "api-1"}

    async def scenario():
        notifier = make_notifier(tmp_path / "state.db", [Receiver("hook", "webhook", hook.url)])
        sent_at = {}
        try:
            for step in range(0, 41):
                t = T0 + 5 * step
                store.append(labels, int(t * 1000), 0.0 if step < 20 else 1.0)  # down for 100 s, then up
                rules.evaluate_due(t)
                result = await notifier.process(rules.firing(), t)
                for note in result.notifications:
                    sent_at.setdefault(note.status, t)
        finally:
            await notifier.aclose()
        return sent_at

    sent_at = run(scenario())
    # fires after `for` (30 s) and waits group_wait (10 s); resolves at 100 s, sent at the next interval
    assert sent_at["firing"] == T0 + 40
    assert T0 + 100 <= sent_at["resolved"] <= T0 + 40 + 2 * ROUTE.group_interval_s
    first, last = hook.posts[0][1], hook.posts[-1][1]
    assert first["alerts"][0]["labels"] == {
        "alertname": "ApiDown", "service": "api", "replica": "api-1", "severity": "critical"
    }
    assert first["alerts"][0]["annotations"] == {"summary": "api-1 down (0)"}
    assert last["status"] == "resolved" and len(hook.posts) == 2


def test_outbox_prunes_only_finished_items() -> None:
    store = NotificationStore(":memory:")
    store.commit({}, [("hook", "g1", {"n": 1}), ("hook", "g2", {"n": 2})], T0)
    first, second = store.due(T0)
    store.finish(first.id, T0 + 1, "delivered")
    assert store.prune(T0 + 0.5) == 0  # finished after the cut-off: kept
    assert store.prune(T0 + 10) == 1
    assert [p.id for p in store.pending()] == [second.id]  # the undelivered one is never pruned


def test_run_loop_processes_until_stopped(tmp_path: Path, hook: WebhookReceiver) -> None:
    class StepClock:
        def __init__(self) -> None:
            self.t = T0

        def now(self) -> float:
            return self.t

        def wall(self) -> float:
            return self.t

        async def sleep(self, seconds: float) -> None:
            self.t += seconds
            if self.t >= T0 + 12:
                stop.set()
            await asyncio.sleep(0)

    stop = asyncio.Event()

    async def scenario():
        notifier = make_notifier(tmp_path / "state.db", [Receiver("hook", "webhook", hook.url)])
        try:
            await asyncio.wait_for(notifier.run(lambda: [firing()], StepClock(), interval_s=1.0, stop=stop), 30)
        finally:
            await notifier.aclose()

    run(scenario())
    assert [body["status"] for _, body in hook.posts] == ["firing"]
