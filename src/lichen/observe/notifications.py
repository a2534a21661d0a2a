"""Delivering alert notifications: webhook (Alertmanager v4 payload), log, real Alertmanager.

How the controller uses it::

    notifier = Notifier.from_spec(app_spec, base_dir=app_dir, external_url="http://127.0.0.1:7070")
    ...
    # in the loop, after each rule evaluation (own task: a slow receiver never blocks the loop)
    await notifier.process(rule_manager.firing(), now=clock.wall())
    # or, as its own task: asyncio.create_task(notifier.run(rule_manager.firing, clock, stop=stopping))
    ...
    await notifier.aclose()

``process`` takes the alerts that are firing now (``lichen.control.notifying.Alert``,
a Prometheus ``/api/v1/alerts`` item, or any object with ``labels``,
``annotations``, ``state`` and ``active_at``/``fired_at``), runs the pure
Alertmanager cycle (``lichen.control.notifying.step``), and in ONE SQLite
transaction stores the new group/notification-log state together with the
decided notifications in an outbox. It then delivers what is due. A failed
delivery stays in the outbox and is retried with exponential backoff
(``backoff_base_s`` doubling to ``backoff_max_s``) for up to ``max_age_s``, so
a receiver that is down for a while still gets every firing and resolved
notification, in order per (receiver, group). Because outbox and state live
in the state database (tables ``notify_state`` and ``notify_outbox``), a
restarted controller neither re-sends what was sent nor forgets what was not.

Receivers (``spec.observability.receivers``):

* ``webhook: URL`` -- POST of Alertmanager's webhook payload, ``version: "4"``;
* ``log: true`` -- one JSON line on the ``lichen.alerts`` logger;
* ``alertmanager: URL`` -- POST ``URL/api/v2/alerts`` the way Prometheus does
  (all alerts on change and every minute; Alertmanager groups, silences and
  inhibits with its own configuration, so Lichen's grouping is bypassed).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from lichen.clocks import Clock
from lichen.control.notifying import (
    Alert,
    InhibitRule,
    Notification,
    NotifierState,
    PushState,
    RouteConfig,
    plan_push,
    step,
)
from lichen.logs import get_logger
from lichen.observe.silences import SilenceStore, connect_state_db, state_db_path

log = get_logger("lichen.alerts")
ZERO_TIME = "0001-01-01T00:00:00Z"
ALERTMANAGER_GROUP = "alertmanager"


# ----------------------------------------------------------------- payloads


def rfc3339(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ZERO_TIME
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    if text.startswith("0001-01-01"):
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def webhook_payload(note: Notification, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (``version: "4"``) for one notification."""
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": 0,
        "status": note.status,
        "receiver": note.receiver,
        "groupLabels": dict(note.group_labels),
        "commonLabels": note.common_labels(),
        "commonAnnotations": note.common_annotations(),
        "externalURL": external_url,
        "alerts": [
            {
                "status": note.alert_status(a),
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at) if a.resolved(note.at) else ZERO_TIME,
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            }
            for a in note.alerts
        ],
    }


def alertmanager_payload(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """The body of ``POST /api/v2/alerts``: postable alerts."""
    return [
        {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": rfc3339(a.ends_at),
            "generatorURL": a.generator_url,
        }
        for a in alerts
    ]


def coerce_alert(item: Any) -> Alert | None:
    """An :class:`Alert` from what a rule evaluator reports; None unless it is firing."""
    if isinstance(item, Alert):
        return item
    get = item.get if isinstance(item, Mapping) else (lambda k, d=None: getattr(item, k, d))
    state = get("state", "firing")
    state = getattr(state, "value", state)
    if str(state).lower() != "firing":
        return None
    started: Any = None
    for key in ("fired_at_s", "fired_at", "firedAt", "active_at_s", "active_at", "activeAt", "starts_at", "startsAt"):
        started = get(key, None)
        if started is not None:
            break
    if isinstance(started, str):
        started = parse_rfc3339(started)
    if isinstance(started, datetime):
        started = started.timestamp()
    labels = {str(k): str(v) for k, v in dict(get("labels", {}) or {}).items() if k != "__name__"}
    annotations = {str(k): str(v) for k, v in dict(get("annotations", {}) or {}).items()}
    url = get("generator_url", None) or get("generatorURL", "") or ""
    return Alert(labels=labels, annotations=annotations, starts_at=float(started or 0.0), generator_url=str(url))


# ------------------------------------------------------------------ storage


@dataclass(frozen=True)
class OutboxItem:
    id: int
    receiver: str
    group_key: str
    payload: Any
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


class NotificationStore:
    """Notifier state and the delivery outbox, in the shared state database."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_state_db(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(
                "CREATE TABLE IF NOT EXISTS notify_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS notify_outbox ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, receiver TEXT NOT NULL, group_key TEXT NOT NULL,"
                " payload TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
                " next_attempt_at REAL NOT NULL, last_error TEXT, delivered_at REAL, outcome TEXT);"
                "CREATE INDEX IF NOT EXISTS notify_outbox_pending ON notify_outbox(delivered_at, receiver, group_key, id);"
            )

    def close(self) -> None:
        self._conn.close()

    def load(self, name: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM notify_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def commit(self, states: Mapping[str, Any], items: Sequence[tuple[str, str, Any]], now: float) -> None:
        """Save state and enqueue ``(receiver, group_key, payload)`` items in one transaction.

        A new Alertmanager push supersedes that receiver's undelivered older pushes
        (each push carries the complete current state).
        """
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for name, value in states.items():
                    self._conn.execute(
                        "INSERT INTO notify_state (name, value) VALUES (?, ?)"
                        " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                        (name, json.dumps(value, sort_keys=True)),
                    )
                for receiver, group, payload in items:
                    if group == ALERTMANAGER_GROUP:
                        self._conn.execute(
                            "UPDATE notify_outbox SET delivered_at = ?, outcome = 'superseded'"
                            " WHERE receiver = ? AND group_key = ? AND delivered_at IS NULL",
                            (now, receiver, group),
                        )
                    self._conn.execute(
                        "INSERT INTO notify_outbox (receiver, group_key, payload, created_at, next_attempt_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (receiver, group, json.dumps(payload), now, now),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """The oldest undelivered item of each (receiver, group) whose retry time has come."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT o.id, o.receiver, o.group_key, o.payload, o.created_at, o.attempts, o.next_attempt_at,"
                " o.last_error FROM notify_outbox o WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ?"
                " AND o.id = (SELECT MIN(i.id) FROM notify_outbox i WHERE i.delivered_at IS NULL"
                " AND i.receiver = o.receiver AND i.group_key = o.group_key) ORDER BY o.id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def finish(self, item_id: int, now: float, outcome: str, error: str | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE notify_outbox SET delivered_at = ?, outcome = ?, last_error = COALESCE(?, last_error),"
                " attempts = attempts + 1 WHERE id = ?",
                (now, outcome, error, item_id),
            )

    def retry_later(self, item_id: int, next_attempt_at: float, error: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE notify_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_attempt_at, error, item_id),
            )

    def pending(self) -> list[OutboxItem]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, receiver, group_key, payload, created_at, attempts, next_attempt_at, last_error"
                " FROM notify_outbox WHERE delivered_at IS NULL ORDER BY id"
            ).fetchall()
        return [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def created_since(self, since: float, limit: int = 10000) -> list[dict[str, Any]]:
        """Every item created at or after ``since`` (wall s), delivered or not, oldest first: what ``lichen chaos``
        reads to count notifications lost."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, receiver, group_key, payload, created_at, attempts, last_error, delivered_at, outcome"
                " FROM notify_outbox WHERE created_at >= ? ORDER BY id LIMIT ?", (since, limit)
            ).fetchall()
        return [{"id": r[0], "receiver": r[1], "group_key": r[2],
                 "status": (json.loads(r[3]).get("status", "") if r[3].startswith("{") else "push"),
                 "created_at": r[4], "attempts": r[5], "last_error": r[6], "delivered_at": r[7],
                 "outcome": r[8] or "pending"} for r in rows]

    def prune(self, before: float) -> int:
        """Forget finished items older than ``before``."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM notify_outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", (before,)
            )
        return cur.rowcount


# ----------------------------------------------------------------- notifier


def receiver_name(spec: Any, index: int) -> str:
    if spec.name:
        return spec.name
    kind = "webhook" if spec.webhook else "alertmanager" if spec.alertmanager else "log"
    return f"{kind}-{index}"


@dataclass(frozen=True)
class Receiver:
    name: str
    kind: str  # "webhook" | "log" | "alertmanager"
    url: str = ""


def receivers_from_spec(app: Any) -> list[Receiver]:
    """The receivers an ``AppSpec`` names (``observability.receivers``), in order; names are not checked
    for uniqueness here (:class:`Notifier` refuses repeats, ``lichen up`` reports them)."""
    receivers = []
    for i, spec in enumerate(app.observability.receivers):
        kind = "webhook" if spec.webhook else "alertmanager" if spec.alertmanager else "log"
        receivers.append(Receiver(receiver_name(spec, i), kind, spec.webhook or spec.alertmanager or ""))
    return receivers


@dataclass(frozen=True)
class ProcessResult:
    notifications: list[Notification]
    delivered: int
    retrying: int
    failed: int


class Notifier:
    """Groups, dedups, silences and inhibits alerts, then delivers through a durable outbox."""

    def __init__(
        self,
        *,
        receivers: Sequence[Receiver],
        store: NotificationStore,
        silences: SilenceStore,
        route: RouteConfig | None = None,
        inhibit_rules: Sequence[InhibitRule] = (),
        external_url: str = "",
        timeout_s: float = 5.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_age_s: float = 24 * 3600.0,
        resend_s: float = 60.0,
        keep_finished_s: float = 7 * 24 * 3600.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        names = [r.name for r in receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {names}")
        self.receivers = {r.name: r for r in receivers}
        self.store, self.silences = store, silences
        self.route = route or RouteConfig()
        self.inhibit_rules = list(inhibit_rules)
        self.external_url = external_url
        self.backoff_base_s, self.backoff_max_s, self.max_age_s = backoff_base_s, backoff_max_s, max_age_s
        self.resend_s = resend_s
        self.keep_finished_s = keep_finished_s
        self._cycles = 0
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout_s)
        self._cycle = asyncio.Lock()
        self.down_until: dict[str, float] = {}
        """receivers made to fail until a wall time, as a refused connection would (``lichen chaos``'s
        ``receiver_down``); each lifts by itself at its time"""

    @classmethod
    def from_spec(
        cls, app: Any, *, base_dir: str | Path = ".", external_url: str = "", **options: Any
    ) -> Notifier:
        """Build from an ``AppSpec``: receivers, route, inhibit rules, and the state DB of ``state.url``."""
        obs = app.observability
        path = state_db_path(app.state.url, base_dir)
        return cls(
            receivers=receivers_from_spec(app),
            store=NotificationStore(path),
            silences=SilenceStore(path),
            route=RouteConfig.from_spec(obs.route),
            inhibit_rules=[InhibitRule.from_spec(r) for r in obs.inhibit_rules],
            external_url=external_url,
            **options,
        )

    def reconfigure(self, receivers: Sequence[Receiver], route: RouteConfig, inhibit_rules: Sequence[InhibitRule],
                    *, backoff_max_s: float | None = None) -> None:
        """New receivers, route and inhibit rules from the next cycle on (``lichen up`` on a running app).

        Group state, the notification log, silences and the outbox stay:
        nothing already sent is sent again. Undelivered items for a receiver
        that is gone are closed as failed at the next delivery attempt.
        """
        names = [r.name for r in receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {names}")
        self.receivers = {r.name: r for r in receivers}
        self.route = route
        self.inhibit_rules = list(inhibit_rules)
        if backoff_max_s is not None:
            self.backoff_max_s = backoff_max_s

    def set_receiver_down(self, name: str, until_wall: float | None) -> None:
        """Fail every delivery to ``name`` until ``until_wall`` (None: lift it now); the outbox retries them as
        for a real outage. ValueError for a receiver this notifier does not have."""
        if name not in self.receivers:
            raise ValueError(f"no alert receiver {name!r} (receivers: {', '.join(sorted(self.receivers)) or 'none'})")
        if until_wall is None:
            self.down_until.pop(name, None)
        else:
            self.down_until[name] = until_wall

    def receiver_faults(self, now: float) -> dict[str, float]:
        """Receivers held down at ``now``, with the wall time each comes back (expired ones are forgotten)."""
        self.down_until = {name: until for name, until in self.down_until.items() if until > now}
        return dict(self.down_until)

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def state(self) -> NotifierState:
        data = self.store.load("groups")
        return NotifierState() if data is None else NotifierState.from_dict(data)

    async def process(self, alerts: Iterable[Any], now: float) -> ProcessResult:
        """One cycle: decide notifications for the firing ``alerts``, persist them, deliver what is due."""
        async with self._cycle:
            current = [a for a in (coerce_alert(x) for x in alerts) if a is not None]
            grouped = [n for n, r in self.receivers.items() if r.kind != "alertmanager"]
            pushers = [n for n, r in self.receivers.items() if r.kind == "alertmanager"]
            states: dict[str, Any] = {}
            items: list[tuple[str, str, Any]] = []
            notes: list[Notification] = []
            if grouped:
                new_state, notes = step(
                    self.state(),
                    current,
                    now,
                    route=self.route,
                    receivers=grouped,
                    silences=self.silences.current(now),
                    inhibit_rules=self.inhibit_rules,
                )
                states["groups"] = new_state.to_dict()
                items += [(n.receiver, n.group_key, webhook_payload(n, self.external_url)) for n in notes]
            for name in pushers:
                data = self.store.load(f"push:{name}")
                push_state = PushState() if data is None else PushState.from_dict(data)
                push_state, batch = plan_push(push_state, current, now, resend_s=self.resend_s)
                states[f"push:{name}"] = push_state.to_dict()
                if batch:
                    items.append((name, ALERTMANAGER_GROUP, alertmanager_payload(batch)))
            self.store.commit(states, items, now)
            self._cycles += 1
            if self._cycles % 100 == 1:
                self.store.prune(now - self.keep_finished_s)
            delivered, retrying, failed = await self.deliver_due(now)
            return ProcessResult(notes, delivered, retrying, failed)

    async def run(
        self,
        alerts: Callable[[], Iterable[Any]],
        clock: Clock,
        *,
        interval_s: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Call :meth:`process` with ``alerts()`` every ``interval_s`` until ``stop`` is set.

        For a controller that prefers a task to calling ``process`` itself:
        ``asyncio.create_task(notifier.run(rule_manager.firing, clock))``. Errors
        are logged and the loop goes on; the outbox keeps what was not delivered.
        """
        while stop is None or not stop.is_set():
            try:
                await self.process(alerts(), clock.wall())
            except Exception:  # noqa: BLE001 - a notifier must outlive any one bad cycle
                log.exception("notification_cycle_failed")
            await clock.sleep(interval_s)

    async def deliver_due(self, now: float) -> tuple[int, int, int]:
        """Try every due outbox item once, concurrently across (receiver, group)."""
        items = self.store.due(now)
        results = await asyncio.gather(*(self._deliver(item, now) for item in items))
        return results.count("delivered"), results.count("retrying"), results.count("failed")

    async def _deliver(self, item: OutboxItem, now: float) -> str:
        receiver = self.receivers.get(item.receiver)
        if receiver is None:
            self.store.finish(item.id, now, "failed", f"receiver {item.receiver!r} is no longer configured")
            return "failed"
        error: str | None
        retryable = True
        try:
            if self.down_until.get(item.receiver, 0.0) > now:  # receiver_down: as a refused connection reads
                raise httpx.ConnectError("[Errno 111] Connection refused (receiver down: fault injected by "
                                         "lichen chaos)")
            if receiver.kind == "log":
                log.warning("alert_notification", receiver=item.receiver, payload=item.payload)
                error = None
            else:
                url = receiver.url
                if receiver.kind == "alertmanager":
                    url = url.rstrip("/") + "/api/v2/alerts"
                response = await self.http.post(url, json=item.payload)
                if response.is_success:
                    error = None
                else:
                    error = f"HTTP {response.status_code} from {url}"
                    retryable = response.status_code >= 500 or response.status_code == 429
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if error is None:
            self.store.finish(item.id, now, "delivered")
            return "delivered"
        if not retryable or now - item.created_at >= self.max_age_s:
            log.error("notification_abandoned", notification=item.id, receiver=item.receiver, error=error)
            self.store.finish(item.id, now, "failed", error)
            return "failed"
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(item.attempts, 30))
        self.store.retry_later(item.id, now + delay, error)
        return "retrying"


def delivery_errors(store: NotificationStore) -> list[dict[str, Any]]:
    """Undelivered items with their last error (for the dashboard and ``lichen status``)."""
    return [
        {"id": i.id, "receiver": i.receiver, "groupKey": i.group_key, "attempts": i.attempts, "lastError": i.last_error}
        for i in store.pending()
    ]


__all__ = [
    "Notifier",
    "NotificationStore",
    "Receiver",
    "receivers_from_spec",
    "ProcessResult",
    "webhook_payload",
    "alertmanager_payload",
    "coerce_alert",
    "delivery_errors",
    "rfc3339",
]
