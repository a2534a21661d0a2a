"""The gateway under ``lichen up``: render its config live and supervise its process like a replica.

On ``lichen up``, :func:`attach_gateway` gives the controller a
:class:`SupervisedGateway`, which:

* renders the gateway config (:func:`lichen.gateway.configs.render_config`)
  from the applied spec (routes, gateway settings, each service's
  ``max_inflight`` and timeout, idempotent POST paths read from a ready
  replica's ``/.well-known/lichen``) and the endpoint registry (the ready
  replicas per service and revision, with revision weights), and writes it
  atomically to ``.lichen/gateway.json`` right after every registry change
  (one write per controller pass; nothing is written when the text is
  unchanged), then sends the gateway SIGHUP so it swaps its tables at once
  without dropping connections (it also notices the file within 0.25 s by
  itself), and confirms the swap: each config carries a ``generation``
  (controller boot token + registry version) that the gateway answers on
  ``GET /-/config``. :meth:`SupervisedGateway.view` gives the controller the
  newest registry version the gateway has confirmed, so a stopping replica
  gets SIGTERM only once no new request can reach it
  (:mod:`lichen.control.draining`);
* runs ``lichen gateway --config .lichen/gateway.json`` as a controller
  auxiliary process (:meth:`~lichen.runtime.controlling.Controller.supervise`:
  own process group, log ``.lichen/logs/gateway.log``, restarted at once after
  a first crash and then with backoff, SIGTERM then SIGKILL on ``lichen
  down``); probes ``/-/healthz`` (readiness for ``lichen status``; failed
  liveness kills it so the controller restarts it); restarts it when the
  spec's gateway host/port change; and re-adopts it after a controller
  restart (pid, start time and a healthy answer, from
  ``.lichen/gateway.process.json``), killing any unrecorded gateway of the app.

Revision weights default to the ready replica count per revision while a
rollout has two revisions ready (:mod:`lichen.control.traffic_splits`);
:meth:`SupervisedGateway.set_revision_weights` is the plain-data hook a
canary rollout calls to set them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from lichen.clocks import Clock
from lichen.control import backoff, probing
from lichen.control.draining import GatewayView
from lichen.control.traffic_splits import revision_weights
from lichen.errors import LichenError
from lichen.gateway import configs
from lichen.runtime import processes, teardown
from lichen.runtime.adopting import await_answer
from lichen.runtime.controlling import Controller
from lichen.runtime.endpoints import EndpointRegistry
from lichen.runtime.observing import StreamFetcher
from lichen.runtime.probing import Prober
from lichen.runtime.processes import ProcessHandle, ProcessLauncher
from lichen.runtime.reporting import log_tail
from lichen.runtime.supervising import AuxiliaryProcess
from lichen.runtime.workspaces import Workspace, atomic_write, read_secrets
from lichen.spec.models import AppSpec, ProbeSpec, RestartSpec

log = logging.getLogger("lichen.controller.gateway")

NAME = "gateway"
COMPANION_ENV = "LICHEN_COMPANION"
PROBE = ProbeSpec(path="/-/healthz", period_s=0.5, timeout_s=1.0, failure_threshold=3, success_threshold=1)
RESTART = RestartSpec(initial_backoff_s=1.0, max_backoff_s=30.0, reset_after_s=60.0)
GRACE_S = 12.0  # the gateway drains in-flight requests for up to 10 s after SIGTERM
CONFIG_CHECK_S = 0.1
RELOAD_INTERVAL_S = 0.25
CONFIRM_WAIT_S = 1.0  # per attempt; an unconfirmed table is asked about again at the next check
CONFIRM_POLL_S = 0.01


def config_path(workspace: Workspace) -> Path:
    return workspace.root / "gateway.json"


def record_path(workspace: Workspace) -> Path:
    return workspace.root / "gateway.process.json"


def gateway_command(config: Path) -> list[str]:
    """``lichen gateway --config FILE`` with this interpreter."""
    return [sys.executable, "-c", "from lichen.cli.main import run; run()", "gateway", "--config", str(config)]


def absolute_paths(app: AppSpec, app_dir: Path) -> AppSpec:
    """The spec with the gateway's file paths (JWKS, TLS certificate and key) made absolute (the config lives in
    ``.lichen/``)."""
    gateway = app.gateway
    jwt = gateway.auth.jwt
    if jwt is not None and jwt.jwks_file and not Path(jwt.jwks_file).is_absolute():
        auth = gateway.auth.model_copy(update={"jwt": jwt.model_copy(update={"jwks_file": str(app_dir / jwt.jwks_file)})})
        gateway = gateway.model_copy(update={"auth": auth})
    tls = gateway.tls
    if tls is not None:
        files = {"cert_file": str(app_dir / Path(tls.cert_file).expanduser()),
                 "key_file": str(app_dir / Path(tls.key_file).expanduser())}  # an absolute path stays as it is
        gateway = gateway.model_copy(update={"tls": tls.model_copy(update=files)})
    return app if gateway is app.gateway else app.model_copy(update={"gateway": gateway})


def render(app: AppSpec, workspace: Workspace, endpoints: list[Any], overrides: Mapping[str, Mapping[str, float]],
           idempotent: Mapping[str, list[str]], generation: str = "", internal_port: int | None = None,
           faults: Mapping[str, list[configs.FaultConfig]] | None = None) -> configs.GatewayConfig:
    """The gateway config for ``app`` and the registry's ready ``endpoints`` (plain data in, config out)."""
    by_service: dict[str, list[configs.Endpoint]] = {}
    counts: dict[str, dict[str, int]] = {}
    for e in endpoints:
        by_service.setdefault(e.service, []).append(
            configs.Endpoint(url=f"http://{e.host}:{e.port}", replica=e.replica, revision=e.revision))
        per_revision = counts.setdefault(e.service, {})
        per_revision[e.revision] = per_revision.get(e.revision, 0) + 1
    weights = {name: revision_weights(counts.get(name, {}), overrides.get(name)) for name in app.services}
    config = configs.render_config(absolute_paths(app, workspace.app_dir), by_service,
                                   {k: v for k, v in weights.items() if v}, idempotent_paths=dict(idempotent),
                                   keys_db=str(workspace.root / "keys.db"),
                                   faults={k: v for k, v in (faults or {}).items() if k in app.services})
    link = configs.ControllerLink(info_file=str(workspace.controller_file), token_file=str(workspace.token_path))
    return config.model_copy(update={"reload_interval_s": RELOAD_INTERVAL_S, "generation": generation,
                                     "controller": link, "internal_port": internal_port if app.gateway.tls else None, "redact_salt_file": str(workspace.redact_salt_file)})


def gateway_env(app: AppSpec | None, workspace: Workspace) -> dict[str, str]:
    """The gateway process's own environment (on top of the controller's, minus the app's secrets):
    the marks that find it again after a crash, and the JWT secret when the spec names one."""
    env = {"PYTHONUNBUFFERED": "1", "LICHEN_APP_DIR": str(workspace.app_dir),
           "LICHEN_CONTROLLER": str(workspace.app_dir), COMPANION_ENV: NAME}
    jwt = app.gateway.auth.jwt if app is not None else None
    if jwt is not None and jwt.secret_env:
        with contextlib.suppress(LichenError):  # a missing secret shows as the gateway's own exit reason
            env.update(read_secrets([jwt.secret_env], workspace, NAME))
    return env


def local_url(host: str, port: int, scheme: str = "http") -> str:
    """The URL a client on this machine uses for a listener on ``host:port`` (loopback for a wildcard
    address, brackets around an IPv6 literal)."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def idempotent_paths_of(description: Any) -> list[str]:
    """The POST/PATCH paths a ``/.well-known/lichen`` document marks idempotent."""
    if not isinstance(description, dict):
        return []
    return sorted({
        str(e.get("path")) for e in (description.get("endpoints") or [])
        if isinstance(e, dict) and e.get("idempotent") and str(e.get("method", "POST")).upper() not in ("GET", "HEAD")
    })


class GatewayHost(Protocol):
    """What the gateway reads and calls of the controller it runs under (a
    :class:`~lichen.runtime.controlling.Controller`): its seams, the applied spec and two hooks."""

    @property
    def workspace(self) -> Workspace: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def launcher(self) -> ProcessLauncher: ...
    @property
    def prober(self) -> Prober: ...
    @property
    def endpoints(self) -> EndpointRegistry: ...
    @property
    def app_spec(self) -> AppSpec | None: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def confirm_drains(self) -> bool: ...
    @property
    def adopt_wait_s(self) -> float: ...
    def wake(self) -> None: ...
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...


class SupervisedGateway:
    """The gateway of one app under ``lichen up`` (see module docs).

    The process itself is a controller auxiliary process (``process``, from
    :meth:`~lichen.runtime.controlling.Controller.supervise`): started on the
    controller's first pass, restarted on the CrashLoopBackOff schedule,
    drained and stopped on shutdown. This object adds what is specific to the
    gateway: its config, health probes, re-adoption and its status.
    """

    def __init__(self, controller: GatewayHost, process: AuxiliaryProcess) -> None:
        self.controller = controller
        self.workspace = controller.workspace
        self.config_path = config_path(controller.workspace)
        self.log_path = controller.workspace.log_path(NAME)
        self.address: tuple[str, int] | None = None
        self.readiness = probing.initial_state("readiness")
        self.liveness = probing.initial_state("liveness")
        self.restarts = 0
        self.config_writes = 0
        self.weight_overrides: dict[str, dict[str, float]] = {}
        self.faults: dict[str, list[configs.FaultConfig]] = {}
        """traffic faults per service, set by ``lichen chaos`` through the API; each ends by itself at its
        ``until_wall``"""
        self.idempotent: dict[str, list[str]] = {}
        self._described: set[tuple[str, str]] = set()
        self._last_text = ""
        self._rendered_from: AppSpec | None = None
        self._dirty = True
        self._kick = asyncio.Event()
        self._seen_handle: ProcessHandle | None = None
        self._boot = secrets.token_hex(4)  # generations of this controller never equal an earlier one's
        self._rendered_version = -1
        self.written_version = -1
        """the endpoint-registry version of the config on disk"""
        self.confirmed_version = -1
        """the newest registry version the gateway process confirmed serving (``GET /-/config``)"""
        self.internal_port: int | None = None
        """with ``gateway.tls``: the gateway's plaintext loopback listener, where the controller probes and scrapes
        it and replicas call it (``url``); chosen once, kept across gateway restarts and re-adoption"""
        self._listening: tuple[object, ...] | None = None
        self.fetcher: Any = StreamFetcher(CONFIRM_WAIT_S, max_bytes=2**20)
        """asks the gateway ``GET /-/config`` and replicas ``GET /.well-known/lichen`` (a seam: tests put a twin
        here)"""
        self.process = process

    # ------------------------------------------------------------ hooks
    def set_revision_weights(self, service: str, weights: Mapping[str, float] | None) -> None:
        """Set (or with None, clear) one service's revision -> weight split; written within a render."""
        if weights:
            self.weight_overrides[service] = {str(k): float(v) for k, v in weights.items()}
        else:
            self.weight_overrides.pop(service, None)
        self._dirty = True

    def set_faults(self, service: str, faults: list[configs.FaultConfig]) -> None:
        """Replace one service's traffic faults (an empty list clears them); written within a render."""
        if faults:
            self.faults[service] = list(faults)
        else:
            self.faults.pop(service, None)
        self._dirty = True

    @property
    def url(self) -> str | None:
        """Where this machine's processes reach the gateway over plain HTTP (the controller's probes and scrapes,
        replicas calling each other): the public listener, or with TLS the loopback one beside it."""
        address = self._spec_address()
        if address is None:
            return None
        return local_url(*address)

    @property
    def public_url(self) -> str | None:
        """Where clients reach the app (loopback when the gateway listens on every interface; https with TLS)."""
        app = self.controller.app_spec
        if app is None:
            return None
        return local_url(app.gateway.host, app.gateway.port, "https" if app.gateway.tls else "http")

    def _internal_port(self) -> int | None:
        app = self.controller.app_spec
        if app is None or app.gateway.tls is None:
            return None
        if self.internal_port is None:
            self.internal_port = processes.free_port("127.0.0.1")
        return self.internal_port

    def _spec_address(self) -> tuple[str, int] | None:
        app = self.controller.app_spec
        if app is None:
            return None
        internal = self._internal_port()
        return ("127.0.0.1", internal) if internal is not None else (app.gateway.host, app.gateway.port)

    def _listen_key(self) -> tuple[object, ...] | None:
        """What the gateway process binds at its start: a change restarts it."""
        app = self.controller.app_spec
        if app is None:
            return None
        tls = app.gateway.tls
        return app.gateway.host, app.gateway.port, tls is not None, tls.redirect_http_port if tls else None

    # ------------------------------------------------------------ startup
    async def prepare(self) -> None:
        """Before the controller's first pass: re-adopt a healthy gateway left running, clean up the rest,
        and make sure a config exists for a gateway about to start."""
        self._last_text = self._read_text()
        await self._adopt()
        self._clean_orphans()
        if self.process.handle is None:
            self._write(self._render())

    async def _adopt(self) -> None:
        launcher = self.controller.launcher
        try:
            record = json.loads(record_path(self.workspace).read_text())
        except (OSError, ValueError):
            return
        self.restarts = int(record.get("restarts") or 0)
        if record.get("internal_port"):
            self.internal_port = int(record["internal_port"])
        if not record.get("pid") or not record.get("port"):
            return
        handle = launcher.adopt(int(record["pid"]), float(record.get("create_time") or 0.0), NAME)
        if handle is None:
            return
        host, port = str(record.get("host") or "127.0.0.1"), int(record["port"])

        async def healthy() -> bool:
            return await self.controller.prober.probe(host, port, PROBE.path, 0.5) == "ok"

        if await await_answer(healthy, lambda: launcher.poll(handle) is not None, self.controller.clock,
                              self.controller.adopt_wait_s):
            self.process.handle = handle
            self.process.started_mono = self.controller.clock.now()
            self.address = (host, port)
            self._listening = self._listen_key()
            self._seen_handle = handle
            self.readiness = probing.ProbeState("readiness", passing=True, answered=True, last_outcome="ok")
            self._event("Adopted", "pid, start time and health verified", f"pid {handle.pid} port {port}")
            return
        launcher.kill(handle)
        self._event("CleanedUp", "not answering its health check", f"pid {handle.pid}")

    def _clean_orphans(self) -> int:
        """Kill gateway processes of this app that no record knows (started just before a crash)."""
        keep = self.process.handle.pid if self.process.handle else None
        killed = 0
        for pid, env in teardown.marked_processes(self.workspace.app_dir):
            if pid != keep and env.get(COMPANION_ENV) == NAME:
                processes.signal_group(pid, signal.SIGKILL)
                self._event("CleanedUp", "orphan without a record", f"pid {pid}")
                killed += 1
        return killed

    # ------------------------------------------------------------ periodic: config and process record
    async def sync(self) -> None:
        """Notice a new gateway process (record it), a changed address (restart it) and a changed config (write it)."""
        handle = self.process.handle
        if handle is not self._seen_handle:
            if handle is not None:
                if self._seen_handle is not None or self.process.exited_mono is not None:
                    self.restarts += 1
                self.address = self._spec_address()
                self._listening = self._listen_key()
                self.readiness, self.liveness = probing.initial_state("readiness"), probing.initial_state("liveness")
            self._seen_handle = handle
            self._save_record()
        if self.controller.stopping:
            return
        wanted, listening = self._spec_address(), self._listen_key()
        if handle is not None and wanted is not None and self.address is not None and (
                wanted != self.address or (self._listening is not None and listening != self._listening)):
            self._write(self._render())  # the new address is on disk before the controller starts the next gateway
            self._event("Stopping", "ConfigChanged", f"listen address {self._listening or self.address} -> "
                        f"{listening or wanted}; SIGTERM")
            self.process.crash_count = 0  # a restart we asked for: no backoff
            self.controller.launcher.terminate(handle)
            self.address, self._listening = wanted, listening
        if self.controller.app_spec is not self._rendered_from:
            self._dirty = True
        if self._dirty:
            self._dirty = False
            if self._write(self._render()):
                self._request_reload()
        await self._confirm()
        if await self._describe_new_revisions():
            self.mark_dirty()  # new idempotent paths: one more render, right away

    async def sync_when_due(self) -> None:
        """Sync right after a registry change (one controller pass is one burst), else every CONFIG_CHECK_S."""
        await self.controller.clock.wait_for(self._kick, CONFIG_CHECK_S)
        self._kick.clear()
        await self.sync()

    def mark_dirty(self, version: int = 0, snapshot: object = None) -> None:
        """An endpoint-registry subscriber: render, write and confirm right after this controller pass."""
        self._dirty = True
        self._kick.set()

    def view(self) -> GatewayView:
        """What a drain decision needs to know of the gateway (plain data)."""
        handle = self.process.handle
        running = handle is not None and handle is self._seen_handle and self.readiness.passing
        return GatewayView(running=running, confirmed_version=self.confirmed_version, alive=handle is not None)

    def _request_reload(self) -> None:
        """SIGHUP a gateway that answers (it installed its handler before answering): reload now."""
        handle = self.process.handle
        if not self.controller.confirm_drains:
            return  # the comparison mode of bench/recovery.py: the gateway finds the table by polling, unconfirmed
        if handle is not None and handle is self._seen_handle and self.readiness.answered:
            self.controller.launcher.reload(handle)

    async def _confirm(self) -> None:
        """Ask the gateway which generation it serves until it is the one written (bounded by CONFIRM_WAIT_S)."""
        if self.written_version <= self.confirmed_version or self.address is None or self.controller.stopping:
            return
        handle = self.process.handle
        if handle is None or handle is not self._seen_handle:
            return
        expected = self._generation(self.written_version)
        version = self.written_version
        url = local_url(*self.address) + "/-/config"
        clock = self.controller.clock
        deadline = clock.now() + CONFIRM_WAIT_S
        while clock.now() < deadline:
            try:
                page = await self.fetcher.get(url)
                served = json.loads(page.text).get("generation") if page.status_code == 200 else None
            except (OSError, TimeoutError, ValueError, AttributeError):
                served = None
            if served == expected:
                self.confirmed_version = max(self.confirmed_version, version)
                self.controller.wake()  # a replica may be waiting for exactly this
                return
            await clock.sleep(CONFIRM_POLL_S)

    def _generation(self, version: int) -> str:
        return f"{self._boot}-{version}"

    def _save_record(self) -> None:
        handle = self.process.handle
        address = self.address or (None, None)
        data = {"pid": handle.pid if handle else None, "create_time": handle.create_time if handle else None,
                "host": address[0], "port": address[1], "restarts": self.restarts, "internal_port": self.internal_port}
        atomic_write(record_path(self.workspace), json.dumps(data) + "\n")

    # ------------------------------------------------------------ periodic: probes
    async def probe(self) -> None:
        """One health check: readiness for status, liveness failures kill the gateway (the controller restarts it)."""
        handle = self.process.handle
        if handle is None or self.address is None or self.controller.stopping or handle is not self._seen_handle:
            return
        now = self.controller.clock.now()
        started = self.process.started_mono if self.process.started_mono is not None else now
        # readiness as a replica's: every 0.1 s from a (re)start until the first answer, then every period_s, so
        # a restarted gateway counts as back within 0.1 s of listening; liveness keeps its own period_s
        if now + 1e-6 < probing.next_probe_at(self.readiness, PROBE, started):  # 1e-6: the ticks' float sums
            return
        outcome = await self.controller.prober.probe(self.address[0], self.address[1], PROBE.path, PROBE.timeout_s)
        if self.process.handle is not handle:
            return
        was_ready = self.readiness.passing
        self.readiness = probing.record_probe(self.readiness, PROBE, outcome, now)
        last_live = self.liveness.last_started_at
        if last_live is None or now - last_live >= PROBE.period_s - probing.STARTUP_POLL_S / 2 or outcome == "ok":
            self.liveness = probing.record_probe(self.liveness, PROBE, outcome, now)
        if self.readiness.passing != was_ready:
            self._event("Ready" if self.readiness.passing else "Unready", "health check", outcome)
        if not self.liveness.passing:
            self._event("Killed", "LivenessFailed", f"{PROBE.failure_threshold} failed health checks; SIGKILL")
            self.controller.launcher.kill(handle)
            self.liveness = probing.initial_state("liveness")

    # ------------------------------------------------------------ config
    def _render(self) -> configs.GatewayConfig:
        app = self.controller.app_spec
        assert app is not None
        self._rendered_from = app
        registry = self.controller.endpoints
        self._rendered_version = registry.version  # read with the endpoints, in the same pass
        now = self.controller.clock.wall()
        live = {name: [f for f in faults if f.until_wall > now] for name, faults in self.faults.items()}
        self.faults = {name: faults for name, faults in live.items() if faults}  # expired ones leave the config
        return render(app, self.workspace, registry.endpoints(), self.weight_overrides, self.idempotent,
                      self._generation(self._rendered_version), self._internal_port(), self.faults)

    def _write(self, config: configs.GatewayConfig) -> bool:
        text = configs.config_text(config)
        if text == self._last_text:
            return False
        configs.write_config(config, self.config_path)
        self._last_text = text
        self.written_version = self._rendered_version
        self.config_writes += 1
        return True

    def _read_text(self) -> str:
        try:
            return self.config_path.read_text()
        except OSError:
            return ""

    async def _describe_new_revisions(self) -> bool:
        """Read idempotent POST paths from one ready replica of each revision not asked yet; True if any changed."""
        pending = {}
        for e in self.controller.endpoints.endpoints():
            if (e.service, e.revision) not in self._described:
                pending.setdefault((e.service, e.revision), e)
        if not pending:
            return False
        before = {k: list(v) for k, v in self.idempotent.items()}
        for (service, revision), e in pending.items():
            try:
                page = await self.fetcher.get(f"http://{e.host}:{e.port}/.well-known/lichen")
                paths = idempotent_paths_of(json.loads(page.text)) if page.status_code == 200 else []
            except (OSError, TimeoutError, ValueError):
                continue  # asked again at the next change
            self._described.add((service, revision))
            if paths or service not in self.idempotent:
                self.idempotent[service] = paths
        return self.idempotent != before

    # ------------------------------------------------------------ status
    def _event(self, kind: str, reason: str = "", message: str = "") -> None:
        self.controller.event(NAME, kind, reason, message, NAME)

    def status(self) -> dict[str, Any]:
        """What ``lichen status`` shows for the gateway, as plain data."""
        now = self.controller.clock.now()
        process = self.process
        if process.handle is not None and process.handle is not self._seen_handle:
            state = "Starting"  # just (re)started by the controller; noticed at the next sync
        elif process.handle is not None:
            state = ("Terminating" if process.kill_at is not None else "Ready" if self.readiness.passing
                     else "NotReady" if self.readiness.answered else "Starting")
        elif process.exited_mono is None:
            state = "Pending"
        else:
            state = "CrashLoopBackOff" if backoff.in_crash_loop(process.crash_count) else "Exited"
        restart_in = None
        if process.handle is None and process.exited_mono is not None:
            restart_in = max(0.0, backoff.restart_at(process.exited_mono, process.crash_count, process.restart) - now)
        running = process.handle is not None and process.started_mono is not None
        entry: dict[str, Any] = {
            "url": self.public_url, "internal_url": self.url if self.url != self.public_url else None,
            "state": state, "pid": process.handle.pid if process.handle else None,
            "port": self._listening[1] if self._listening else self.address[1] if self.address else None,
            "restarts": self.restarts,
            "last_exit_code": process.last_exit_code, "restart_in_s": restart_in,
            "uptime_s": (now - process.started_mono) if running else None,  # type: ignore[operator]
            "upstreams": len(self.controller.endpoints.endpoints()), "config": str(self.config_path),
            "config_writes": self.config_writes, "log": str(self.log_path),
            "revision_weights": {k: dict(v) for k, v in self.weight_overrides.items()},
            "faults": {k: [f.model_dump() for f in v] for k, v in self.faults.items()},
            # the gateway confirmed serving the newest endpoint table: every Ready replica is routed to
            "table_confirmed": (not self.controller.confirm_drains
                                or self.confirmed_version >= self.controller.endpoints.version),
        }
        if state in ("CrashLoopBackOff", "Exited"):
            entry["log_tail"] = log_tail(self.log_path)
        return entry


def attach_gateway(controller: Controller) -> SupervisedGateway:
    """Give ``controller`` its app's gateway (what ``lichen up`` does); call after ``apply``, before ``run``.

    Available afterwards as ``controller.gateway``. Its process is a supervised
    auxiliary process; re-adopting one left running happens in ``run``, before
    the first pass (:meth:`SupervisedGateway.prepare`).
    """
    process = controller.supervise(NAME, gateway_command(config_path(controller.workspace)),
                                   gateway_env(controller.app_spec, controller.workspace), RESTART, GRACE_S)
    gateway = SupervisedGateway(controller, process)
    controller.gateway = gateway
    controller.endpoints.subscribe(gateway.mark_dirty)
    controller.add_startup(gateway.prepare)
    controller.add_periodic("gateway config", 0.0, gateway.sync_when_due)
    controller.add_periodic("gateway probes", probing.STARTUP_POLL_S, gateway.probe)  # probe() keeps the schedule
    return gateway
