"""Observability under ``lichen up``: the metrics stack of one app, wired to its controller.

``attach_observing(controller, spec, token=..., api_url=...)`` builds, from
``spec.observability`` (reading the controller only through
:class:`ObservedController`: its clock, replicas, gateway and periodic-task
hook):

* a :class:`~lichen.observe.series.SeriesStore` (retention; restored from and
  snapshotted to ``persist_path`` when set, relative to the spec's directory);
* a :class:`~lichen.observe.scraping.Scraper` over every running replica that
  has been ready since it started, at its ``metrics_path`` (labels ``service``,
  ``revision``, ``replica``, ``instance`` and ``job="replica"``), the gateway's
  ``/metrics`` when the controller knows a gateway address (``job="gateway"``),
  and the controller's own ``/metrics`` (``job="controller"``);
* a :class:`~lichen.observe.rules.RuleManager` with the default rule pack for the
  app (``default_rules: true``) plus the ``rules`` files;
* a :class:`~lichen.observe.notifications.Notifier` with the spec's receivers,
  route and inhibit rules; silences live in the state database, so ``lichen
  silence add|expire`` take effect at the next notification cycle.

When ``lichen up`` re-applies the spec to a running controller,
:meth:`Observing.prepare_spec` reads and checks every rule file and the
receivers first, changing nothing (any problem raises :class:`SpecRefused`
listing all of them, and the caller applies nothing); then
:meth:`Observing.apply_update` swaps the rule groups in as Prometheus reloads
them (unchanged groups keep their alert state and ``for`` timers, changed
ones keep the alerts of rules with the same name and labels) and reconfigures
the notifier. Settings the rounds were started with (intervals, timeouts,
retention, ``persist_path``, ``state.url``) are reported as needing a restart.

It registers controller periodic tasks, each its own asyncio task so the
control loop never waits on them: a scrape round every ``scrape_interval_s``
(every request bounded by ``scrape_timeout_s``), rule evaluation every
``evaluation_interval_s`` (or the shortest group interval) in a worker thread
so PromQL never holds up the event loop, then a notification cycle as its own
task (a slow receiver delays neither scraping nor evaluation). When the two
intervals are equal, evaluation runs right after each scrape round, so a rule
sees a fresh sample at once instead of up to one interval later.

:meth:`Observing.routers` returns the Prometheus query API (``/api/v1/...``,
``/federate``; bearer token of the control API) and the dashboard
(``/dashboard/``). ``LICHEN_OBSERVE=off`` in the controller's environment
builds nothing (for overhead comparisons, see ``bench/observing_overhead.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from lichen.clocks import Clock
from lichen.control.notifying import InhibitRule, RouteConfig, next_flush_at
from lichen.errors import ConfigError, LichenError
from lichen.logs import get_logger
from lichen.observe.collecting import MetricsPipeline
from lichen.observe.default_rules import default_rules_yaml
from lichen.observe.notifications import Notifier, Receiver, receivers_from_spec
from lichen.observe.rule_files import RuleGroup, check_rule_file, parse_rule_text
from lichen.observe.rules import RulesReload
from lichen.observe.scraping import Scraper, ScrapeTarget
from lichen.runtime.endpoints import Ingress
from lichen.runtime.replicas import Replica
from lichen.runtime.state import ReplicaRecord
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec, ServiceSpec

log = get_logger("lichen.observing")
SNAPSHOT_INTERVAL_S = 60.0
DEFAULT_GROUP_PREFIX = "lichen-defaults-"


RESTART_FIELDS = ("scrape_interval_s", "scrape_timeout_s", "evaluation_interval_s", "retention", "persist_path")
"""``observability`` fields the running rounds were built with: a change waits for a controller restart."""


class SpecRefused(ConfigError):
    """A re-applied spec that cannot run: ``problems`` lists every one, located; nothing was applied."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"refused: {len(problems)} {noun}, so nothing was applied and the controller keeps "
                         "running its current spec, rules and receivers:\n" + "\n".join(problems))


@dataclass
class ObservabilityUpdate:
    """A re-applied spec's observability, checked and ready to swap in (:meth:`Observing.prepare_spec`)."""

    spec: AppSpec
    groups: list[RuleGroup]
    receivers: list[Receiver]
    notifications_changed: bool
    restart_needed: list[str]


def restart_needed(started: AppSpec, spec: AppSpec) -> list[str]:
    """The settings that differ from those the running rounds were started with (pure)."""
    fields = [f"observability.{name}" for name in RESTART_FIELDS
              if getattr(started.observability, name) != getattr(spec.observability, name)]
    if started.state.url != spec.state.url and (started.observability.receivers or spec.observability.receivers):
        fields.append("state.url")  # the notifier's outbox and silences
    return fields


def default_groups(spec: AppSpec) -> list[RuleGroup]:
    """The app's default rule pack as rule groups (empty when ``default_rules: false``)."""
    if not spec.observability.default_rules:
        return []
    return parse_rule_text(default_rules_yaml(spec), f"<default rules of {spec.app}>")


@dataclass
class FetchedPage:
    status_code: int
    text: str


class StreamFetcher:
    """The scraper's HTTP client: one short HTTP/1.0 GET per scrape over raw asyncio streams.

    Profiling a 20-replica controller showed httpx's client and connection pool
    (request/response objects, per-request pool scans) cost several times the
    parsing of the scraped text; a loopback scrape needs none of it. Same
    approach as the controller's probes (:mod:`lichen.runtime.probing`).
    Non-``http`` URLs go through httpx. Duck-types the part of
    ``httpx.AsyncClient`` the :class:`~lichen.observe.scraping.Scraper` uses.
    """

    def __init__(self, timeout_s: float, max_bytes: int = 64 * 2**20) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._fallback: Any = None

    async def get(self, url: str) -> Any:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            import httpx

            if self._fallback is None:
                self._fallback = httpx.AsyncClient(timeout=self.timeout_s,
                                                   headers={"Accept": "text/plain;version=0.0.4"})
            return await self._fallback.get(url)
        host, port = parts.hostname, parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        writer = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                             "Accept: text/plain;version=0.0.4\r\nUser-Agent: lichen-scraper\r\n\r\n".encode())
                raw, expected = b"", None
                while data := await reader.read(2**20):
                    raw += data
                    if len(raw) > self.max_bytes:
                        raise OSError(f"response larger than {self.max_bytes} bytes")
                    if expected is None and (end := raw.find(b"\r\n\r\n")) >= 0:
                        expected = end + 4 + _content_length(raw[:end])
                    if expected is not None and len(raw) >= expected:
                        break  # a server that keeps the connection open despite HTTP/1.0
        except TimeoutError:
            raise TimeoutError(f"no answer within {self.timeout_s:g}s") from None
        finally:
            if writer is not None:
                writer.close()
        try:
            return _parse_response(raw)
        except (ValueError, IndexError):
            raise OSError("malformed HTTP response") from None

    async def aclose(self) -> None:
        if self._fallback is not None:
            await self._fallback.aclose()
            self._fallback = None


def _parse_response(raw: bytes) -> FetchedPage:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if not sep or len(status) < 2 or not status[1].isdigit():
        raise ValueError("malformed HTTP response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    return FetchedPage(int(status[1]), body.decode("utf-8", errors="replace"))


def _content_length(head: bytes) -> int:
    """The Content-Length of a response head, or a huge number when it has none (read to EOF)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return 2**62


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("malformed chunked body")
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


def observing_enabled() -> bool:
    return os.environ.get("LICHEN_OBSERVE", "on").strip().lower() not in ("off", "0", "false", "no")


class EventLog(Protocol):
    def events(self, service: str | None = None, limit: int = 100) -> list[Any]: ...


class ObservedController(Protocol):
    """What the metrics stack reads of the controller it runs under (a
    :class:`lichen.runtime.controlling.Controller`; tests pass a small twin)."""

    @property
    def workspace(self) -> Workspace: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> CollectorRegistry | None:
        """where the stack's own cost is counted (the controller's ``/metrics``)"""
    @property
    def replicas(self) -> Mapping[str, Replica]: ...
    @property
    def gateway(self) -> Ingress | None: ...
    @property
    def store(self) -> EventLog: ...
    def spec_of(self, record: ReplicaRecord) -> ServiceSpec: ...
    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None: ...
    def status(self) -> dict[str, Any]: ...


class Observing:
    """The metrics stack of one app under a running controller (see the module docs)."""

    def __init__(self, controller: ObservedController, spec: AppSpec, *, token: str | None,
                 api_url: str | None = None) -> None:
        self.controller = controller
        self.spec = spec
        self.started = spec
        """the spec the rounds were built from (intervals, timeouts, retention: see :data:`RESTART_FIELDS`)"""
        self.token = token
        self.api_url = api_url
        self.after_evaluation: list[Callable[[list[Any]], Awaitable[None]]] = []
        """called with the firing alerts after each evaluation round (remediation)"""
        self.announcements: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        """alerts the control plane raises itself (a canary rolled back), with when they resolve (wall s)"""
        self.base_dir = Path(controller.workspace.app_dir)
        obs = spec.observability
        self.pipeline = MetricsPipeline.from_spec(obs, base_dir=self.base_dir, extra_groups=default_groups(spec),
                                                  snapshot_interval_s=SNAPSHOT_INTERVAL_S)
        self.store, self.engine, self.rules = self.pipeline.store, self.pipeline.engine, self.pipeline.rules
        self.rules.external_url = f"{api_url}/dashboard/" if api_url else ""  # $externalURL in alert templates
        self.fetcher = StreamFetcher(obs.scrape_timeout_s)
        self.scraper = self.pipeline.scraper = Scraper(self.store, timeout_s=obs.scrape_timeout_s, client=self.fetcher)
        route = obs.route
        self.notifier: Notifier | None = None
        if obs.receivers:
            self.notifier = Notifier.from_spec(
                spec, base_dir=self.base_dir, external_url=f"{api_url}/dashboard/" if api_url else "",
                backoff_base_s=1.0, backoff_max_s=min(60.0, max(5.0, route.group_interval_s)),
            )
        self.static_targets: dict[str, ScrapeTarget] = {}
        """extra targets by name (``set_target``), e.g. a gateway the controller does not know about"""
        self._notify_task: asyncio.Task[Any] | None = None
        self._attached = False
        self._evaluation_ticking = False
        self._last_snapshot = controller.clock.now()
        self._instrument(controller.metrics)
        self.rounds = {"scrape": 0, "evaluate": 0, "notify": 0}
        self.skipped: dict[str, int] = {}
        self.cost_s = {"scrape": 0.0, "evaluate": 0.0}
        """seconds (on the controller's clock) spent per kind of round (the evaluation's includes its thread)"""

    def _instrument(self, registry: CollectorRegistry | None) -> None:
        """The stack's own cost on the controller's ``/metrics`` (so the overhead bench can read it)."""
        self._m_round = None
        if registry is None:
            return
        from prometheus_client import Gauge, Histogram

        self._m_round = Histogram("lichen_observe_round_seconds", "Wall time of one scrape or rule evaluation round.",
                                  ["kind"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                                  registry=registry)
        series = Gauge("lichen_observe_series", "Series in the embedded store.", registry=registry)
        series.set_function(lambda: float(self.store.stats().get("series", 0)))
        samples = Gauge("lichen_observe_samples", "Samples in the embedded store.", registry=registry)
        samples.set_function(lambda: float(self.store.stats().get("samples", 0)))

    # ------------------------------------------------------------ targets
    def set_target(self, name: str, url: str | None, **labels: str) -> None:
        """Scrape ``url`` (a full ``/metrics`` URL) under ``name``; ``None`` removes it."""
        if url is None:
            self.static_targets.pop(name, None)
        else:
            self.static_targets[name] = ScrapeTarget(url, labels=tuple(sorted(labels.items())))

    def _gateway_url(self) -> str | None:
        """``controller.gateway.url`` (:mod:`lichen.runtime.gatewaying`) when the app runs a gateway that
        has passed a health check since it started (as for replicas: no failed scrapes while it starts)."""
        gateway = self.controller.gateway
        if gateway is None or not (gateway.readiness.passing or gateway.readiness.ever_passed):
            return None
        return gateway.url or None

    def targets(self) -> list[ScrapeTarget]:
        """Every running replica that has passed readiness since it started, the gateway (when known
        and likewise ready once) and the controller itself.

        A replica is scraped from its first passing readiness probe on (and stays a target while
        it runs, also when it later turns unready): scrapes of a process that is still starting
        would only record ``up 0``, so one crash-looping replica would leave a failed ``up``
        series per port it ever had. Each replica is scraped at its revision's
        ``services.*.metrics_path``.
        """
        targets = []
        for replica in list(self.controller.replicas.values()):
            r = replica.record
            if r.phase != "running" or not r.port or replica.handle is None or not replica.readiness.ever_passed:
                continue
            path = self.controller.spec_of(r).metrics_path
            url = f"http://127.0.0.1:{r.port}{path if path.startswith('/') else '/' + path}"
            targets.append(ScrapeTarget(url, service=r.service, revision=r.revision, replica=r.id,
                                        labels=(("job", "replica"),)))
        gateway = self._gateway_url()
        if gateway:
            targets.append(ScrapeTarget(gateway.rstrip("/") + "/metrics", labels=(("job", "gateway"),)))
        if self.api_url:
            targets.append(ScrapeTarget(self.api_url.rstrip("/") + "/metrics", labels=(("job", "controller"),)))
        targets.extend(self.static_targets.values())
        return targets

    # ------------------------------------------------------------ rounds
    @property
    def evaluation_interval_s(self) -> float:
        """The evaluation tick: the shortest group interval (it follows reloaded rule files)."""
        intervals = [self.rules.interval_of(g) for g in self.rules.groups]
        return min([self.started.observability.evaluation_interval_s, *intervals])

    @property
    def fused(self) -> bool:
        """Evaluate right after each scrape (same interval): no extra phase lag."""
        return abs(self.evaluation_interval_s - self.started.observability.scrape_interval_s) < 1e-9

    async def scrape_round(self) -> None:
        clock = self.controller.clock
        started = clock.now()
        await self.scraper.scrape_all(self.targets(), clock.wall())
        self.rounds["scrape"] += 1
        self.cost_s["scrape"] += clock.now() - started
        if self._m_round is not None:
            self._m_round.labels("scrape").observe(clock.now() - started)
        if self.fused:
            await self.evaluate_round()
        if self.pipeline.persist_path is not None and clock.now() - self._last_snapshot >= SNAPSHOT_INTERVAL_S:
            self._last_snapshot = clock.now()
            await asyncio.to_thread(self._snapshot)

    async def evaluate_round(self) -> None:
        clock = self.controller.clock
        started = clock.now()
        now = clock.wall()
        await asyncio.to_thread(self.rules.evaluate_due, now)
        if self.after_evaluation:
            firing = self.rules.firing()
            for hook in self.after_evaluation:
                try:
                    await hook(firing)
                except Exception:  # a hook's bug never stops the alert engine
                    log.exception("after_evaluation_failed")
        self.rounds["evaluate"] += 1
        self.cost_s["evaluate"] += clock.now() - started
        if self._m_round is not None:
            self._m_round.labels("evaluate").observe(clock.now() - started)
        if self.notifier is not None and (self._notify_task is None or self._notify_task.done()):
            self._notify_task = asyncio.create_task(self._notify(now))

    async def _notify(self, now: float) -> None:
        """One notification cycle; when a group is due before the next evaluation, another cycle at that moment.

        So ``group_wait`` and ``group_interval`` hold to the moment, as with
        Alertmanager's timers, instead of rounding up to an evaluation tick.
        """
        assert self.notifier is not None
        clock = self.controller.clock
        try:
            for _ in range(4):
                await self.notifier.process([*self.rules.firing(), *self.announced(now)], now)
                self.rounds["notify"] += 1
                due = next_flush_at(self.notifier.state())
                wall = clock.wall()
                if due is None or due > wall + self.evaluation_interval_s:
                    return
                await clock.sleep(max(0.05, due - wall))
                now = clock.wall()
        except Exception:  # noqa: BLE001 - the outbox keeps what was not delivered
            log.exception("notification_cycle_failed")

    def announce(self, name: str, labels: dict[str, str], annotations: dict[str, str], for_s: float = 600.0) -> None:
        """Raise a control-plane alert through the receivers (routing, grouping, silences apply): firing from
        now for ``for_s``, then resolved. The same name and labels again restart it."""
        now = self.controller.clock.wall()
        full = {"alertname": name, "app": self.spec.app, **labels}
        alert = {"labels": full, "annotations": annotations, "state": "firing", "fired_at_s": now}
        self.announcements[(name, repr(sorted(full.items())))] = (alert, now + for_s)
        if self.notifier is not None and (self._notify_task is None or self._notify_task.done()):
            self._notify_task = asyncio.create_task(self._notify(now))  # now, not at the next evaluation

    def announced(self, now: float) -> list[dict[str, Any]]:
        """The control plane's own alerts firing at ``now`` (expired ones are dropped: the notifier resolves them)."""
        for key in [k for k, (_, until) in self.announcements.items() if until <= now]:
            del self.announcements[key]
        return [alert for alert, _ in self.announcements.values()]

    def _snapshot(self) -> None:
        assert self.pipeline.persist_path is not None
        self.store.drop_expired(int(self.controller.clock.wall() * 1000))
        self.store.snapshot(self.pipeline.persist_path)

    def attach(self) -> None:
        """Register the periodic rounds with the controller (before or after it runs).

        Each is a controller periodic task that waits for its own fixed-rate
        tick (``start + k * interval``), so rounds do not drift by their own
        duration and ``for``/``group_wait`` are not stretched on a busy machine;
        a round that overruns skips the ticks it missed.
        """
        obs = self.started.observability
        self.controller.add_periodic("metrics scrape", 0.0, self._ticker("scrape", obs.scrape_interval_s,
                                                                          self.scrape_round))
        self._attached = True
        if not self.fused:
            self._start_evaluation_ticks()

    def _start_evaluation_ticks(self) -> None:
        """A tick of its own for rule evaluation, at the shortest group interval (which reloads may change)."""
        async def evaluate_unless_fused() -> None:
            if not self.fused:  # a reload made the intervals equal again: the scrape round evaluates
                await self.evaluate_round()

        self._evaluation_ticking = True
        self.controller.add_periodic("rule evaluation", 0.0, self._ticker("evaluate", lambda: self.evaluation_interval_s,
                                                                           evaluate_unless_fused))

    def _ticker(self, name: str, interval: float | Callable[[], float],
                round_fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        clock = self.controller.clock
        every = interval if callable(interval) else (lambda: interval)
        due = [clock.now() + every()]

        async def tick() -> None:
            interval_s = every()
            wait_s = due[0] - clock.now()
            if wait_s > 0:
                await clock.sleep(wait_s)
            try:
                await round_fn()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed round never stops the next
                log.exception("round_failed", round=name)
            due[0] += interval_s
            now = clock.now()
            if due[0] <= now:  # overran: skip the missed ticks
                self.skipped[name] = self.skipped.get(name, 0) + int((now - due[0]) // interval_s) + 1
                due[0] += interval_s * (int((now - due[0]) // interval_s) + 1)

        return tick

    # ------------------------------------------------------------ re-applying the spec
    def prepare_spec(self, spec: AppSpec) -> ObservabilityUpdate:
        """Read and check what ``spec`` asks for, changing nothing; :class:`SpecRefused` lists every problem.

        The rule files are read now (paths relative to the app directory, as
        at start), so a file that breaks between this check and the swap
        cannot half-apply: the swap uses exactly what was checked here.
        """
        problems: list[str] = []
        groups: list[RuleGroup] = []
        for rule_file in spec.observability.rules:
            path = Path(rule_file) if Path(rule_file).is_absolute() else self.base_dir / rule_file
            found, errors = check_rule_file(path)
            problems.extend(str(e) for e in errors)
            groups.extend(found)
        try:
            groups.extend(default_groups(spec))
        except LichenError as exc:  # generated from the spec: a bug rather than user input, but never half-apply
            problems.append(f"default rules: {exc}")
        receivers = receivers_from_spec(spec)
        names = [r.name for r in receivers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"observability.receivers: receiver names must be unique, {', '.join(repeated)} repeated")
        if problems:
            raise SpecRefused(problems)
        old, new = self.spec.observability, spec.observability
        changed = (old.receivers, old.route, old.inhibit_rules) != (new.receivers, new.route, new.inhibit_rules)
        return ObservabilityUpdate(spec, groups, receivers, changed, restart_needed(self.started, spec))

    def commit_rules(self, update: ObservabilityUpdate) -> RulesReload:
        """Swap in the checked rule groups (thread-safe: waits for an evaluation in progress)."""
        return self.rules.replace_groups(update.groups, self.controller.clock.wall())

    def commit_spec(self, update: ObservabilityUpdate, reload: RulesReload) -> dict[str, Any]:
        """After :meth:`commit_rules`, on the controller's loop: the notifier and the ticks; returns the report."""
        obs = update.spec.observability
        if update.notifications_changed:
            route = obs.route
            if self.notifier is None and update.receivers:
                self.notifier = Notifier.from_spec(
                    update.spec, base_dir=self.base_dir, external_url=self.rules.external_url,
                    backoff_base_s=1.0, backoff_max_s=min(60.0, max(5.0, route.group_interval_s)),
                )
            elif self.notifier is not None:  # with no receivers left, undelivered items are closed out as failed
                self.notifier.reconfigure(update.receivers, RouteConfig.from_spec(route),
                                          [InhibitRule.from_spec(r) for r in obs.inhibit_rules],
                                          backoff_max_s=min(60.0, max(5.0, route.group_interval_s)))
        if self._attached and not self._evaluation_ticking and not self.fused:
            self._start_evaluation_ticks()  # a reloaded group asks for a shorter interval than the scrape's
        self.spec = update.spec
        return observability_report(reload, update, self.base_dir)

    async def apply_update(self, update: ObservabilityUpdate) -> dict[str, Any]:
        """:meth:`commit_rules` in a worker thread (an evaluation may hold the rules), then :meth:`commit_spec`."""
        reload = await asyncio.to_thread(self.commit_rules, update)
        return self.commit_spec(update, reload)

    def apply_spec(self, spec: AppSpec) -> dict[str, Any]:
        """:meth:`prepare_spec` and both commits, synchronously (the loop must not be evaluating meanwhile)."""
        update = self.prepare_spec(spec)
        return self.commit_spec(update, self.commit_rules(update))

    # ------------------------------------------------------------ API
    def routers(self, requires: Callable[[str], Any] | None = None) -> list[Any]:
        """The query API and the dashboard; ``requires(role)`` gives the dependency that checks a role
        (the control API's :class:`~lichen.runtime.access_tokens.AccessGuard`)."""
        from lichen.observe.dashboard import build_dashboard_router

        controller = self.controller
        query = self.pipeline.router(clock=controller.clock)
        dashboard = build_dashboard_router(
            app_name=self.spec.app,
            engine=self.engine,
            rules=self.rules,
            status=controller.status,
            events=lambda limit: [e.__dict__ for e in controller.store.events(None, limit)],
            token=self.token,
            requires=requires,
            refresh_s=max(1.0, min(5.0, self.spec.observability.scrape_interval_s)),
            clock=controller.clock,
            slos=lambda: ({n: s.slo for n, s in sorted(self.spec.services.items())}, self.spec.observability.retention),
        )
        return [query, dashboard]

    def stats(self) -> dict[str, Any]:
        return {"rounds": dict(self.rounds), "skipped": dict(self.skipped), "cost_s": dict(self.cost_s),
                "targets": len(self.targets()),
                "store": self.store.stats()}

    async def aclose(self) -> None:
        if self._notify_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._notify_task, 10)
        with contextlib.suppress(Exception):
            await self.fetcher.aclose()
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                await self.notifier.aclose()
            for part in (self.notifier.store, self.notifier.silences):
                with contextlib.suppress(Exception):
                    part.close()
        if self.pipeline.persist_path is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._snapshot)


def group_label(source: str, name: str, base_dir: Path) -> str:
    """How a report names a group: ``name (file)`` with the file relative to the app, or ``name (default rules)``."""
    if source.startswith("<default rules"):
        return f"{name} (default rules)"
    path = Path(source)
    shown = path.relative_to(base_dir) if path.is_relative_to(base_dir) else path
    return f"{name} ({shown})"


def observability_report(reload: RulesReload, update: ObservabilityUpdate, base_dir: Path) -> dict[str, Any]:
    """What a re-apply did to rules and notifications, as the control API returns it (pure)."""
    def names(pairs: tuple[tuple[str, str], ...]) -> list[str]:
        return [group_label(source, name, base_dir) for source, name in pairs]

    return {
        "rules": {"status": "applied" if reload.applied else "unchanged", "added": names(reload.added),
                  "changed": names(reload.changed), "removed": names(reload.removed),
                  "unchanged": len(reload.unchanged)},
        "notifications": {"status": "applied" if update.notifications_changed else "unchanged",
                          "receivers": [r.name for r in update.receivers]},
        "restart_needed": list(update.restart_needed),
    }


def attach_observing(controller: ObservedController, spec: AppSpec, *, token: str | None,
                     api_url: str | None = None) -> Observing | None:
    """Build the app's metrics stack, register its rounds with ``controller``; None when ``LICHEN_OBSERVE=off``."""
    if not observing_enabled():
        return None
    observing = Observing(controller, spec, token=token, api_url=api_url)
    observing.attach()
    return observing
