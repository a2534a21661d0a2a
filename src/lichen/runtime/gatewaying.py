"""The gateway under ``lichen up``: render its config live and supervise its process like a replica.

On ``lichen up``, :func:`attach_gateway` gives the controller a
:class:`SupervisedGateway`, which:

* renders the gateway config (:func:`lichen.gateway.configs.render_config`)
  from the applied spec (routes, gateway settings, each service's
  ``max_inflight`` and timeout, idempotent POST paths read from a ready
  replica's ``/.well-known/lichen``) and the endpoint registry (the ready
  replicas per service and revision, with revision weights), and writes it
  atomically to ``.lichen/gateway.json`` after registry changes (checked every
  0.1 s, which debounces a burst; nothing is written when the text is
  unchanged); the gateway notices the file within 0.25 s and swaps its tables
  without dropping connections;
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

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from lichen.control import backoff, probing
from lichen.control.traffic_splits import revision_weights
from lichen.errors import LichenError
from lichen.gateway import configs
from lichen.runtime import processes
from lichen.runtime.processes import ProcessHandle
from lichen.runtime.workspaces import Workspace, atomic_write, read_secrets
from lichen.spec.models import AppSpec, ProbeSpec, RestartSpec

if TYPE_CHECKING:
    from lichen.runtime.controlling import Controller

log = logging.getLogger("lichen.controller.gateway")

NAME = "gateway"
COMPANION_ENV = "LICHEN_COMPANION"
PROBE = ProbeSpec(path="/-/healthz", period_s=0.5, timeout_s=1.0, failure_threshold=3, success_threshold=1)
RESTART = RestartSpec(initial_backoff_s=1.0, max_backoff_s=30.0, reset_after_s=60.0)
GRACE_S = 12.0  # the gateway drains in-flight requests for up to 10 s after SIGTERM
CONFIG_CHECK_S = 0.1
RELOAD_INTERVAL_S = 0.25


def config_path(workspace: Workspace) -> Path:
    return workspace.root / "gateway.json"


def record_path(workspace: Workspace) -> Path:
    return workspace.root / "gateway.process.json"


def gateway_command(config: Path) -> list[str]:
    """``lichen gateway --config FILE`` with this interpreter."""
    return [sys.executable, "-c", "from lichen.cli.main import run; run()", "gateway", "--config", str(config)]


def absolute_paths(app: AppSpec, app_dir: Path) -> AppSpec:
    """The spec with the gateway's file paths made absolute (the config lives in ``.lichen/``)."""
    jwt = app.gateway.auth.jwt
    if jwt is None or not jwt.jwks_file or Path(jwt.jwks_file).is_absolute():
        return app
    auth = app.gateway.auth.model_copy(update={"jwt": jwt.model_copy(update={"jwks_file": str(app_dir / jwt.jwks_file)})})
    return app.model_copy(update={"gateway": app.gateway.model_copy(update={"auth": auth})})


def render(app: AppSpec, workspace: Workspace, endpoints: list[Any], overrides: Mapping[str, Mapping[str, float]],
           idempotent: Mapping[str, list[str]]) -> configs.GatewayConfig:
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
                                   keys_db=str(workspace.root / "keys.db"))
    return config.model_copy(update={"reload_interval_s": RELOAD_INTERVAL_S})


def idempotent_paths_of(description: Any) -> list[str]:
    """The POST/PATCH paths a ``/.well-known/lichen`` document marks idempotent."""
    if not isinstance(description, dict):
        return []
    return sorted({
        str(e.get("path")) for e in (description.get("endpoints") or [])
        if isinstance(e, dict) and e.get("idempotent") and str(e.get("method", "POST")).upper() not in ("GET", "HEAD")
    })


class SupervisedGateway:
    """The gateway of one app under ``lichen up`` (see module docs).

    The process itself is a controller auxiliary process
    (:meth:`~lichen.runtime.controlling.Controller.supervise`): started on the
    controller's first pass, restarted on the CrashLoopBackOff schedule,
    drained and stopped on shutdown. This object adds what is specific to the
    gateway: its config, health probes, re-adoption and its status.
    """

    def __init__(self, controller: Controller) -> None:
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
        self.idempotent: dict[str, list[str]] = {}
        self._described: set[tuple[str, str]] = set()
        self._last_text = ""
        self._rendered_from: AppSpec | None = None
        self._dirty = True
        self._seen_handle: ProcessHandle | None = None
        self.process = controller.supervise(NAME, gateway_command(self.config_path), self._env(), RESTART, GRACE_S)

    # ------------------------------------------------------------ hooks
    def set_revision_weights(self, service: str, weights: Mapping[str, float] | None) -> None:
        """Set (or with None, clear) one service's revision -> weight split; written within a render."""
        if weights:
            self.weight_overrides[service] = {str(k): float(v) for k, v in weights.items()}
        else:
            self.weight_overrides.pop(service, None)
        self._dirty = True

    @property
    def url(self) -> str | None:
        """Where clients reach the app (loopback when the gateway listens on every interface)."""
        address = self._spec_address()
        if address is None:
            return None
        host = "127.0.0.1" if address[0] in ("0.0.0.0", "", "::") else address[0]
        return f"http://{host}:{address[1]}"

    def _spec_address(self) -> tuple[str, int] | None:
        app = self.controller.app_spec
        return None if app is None else (app.gateway.host, app.gateway.port)

    def _env(self) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "LICHEN_APP_DIR": str(self.workspace.app_dir),
               "LICHEN_CONTROLLER": str(self.workspace.app_dir), COMPANION_ENV: NAME}
        app = self.controller.app_spec
        jwt = app.gateway.auth.jwt if app is not None else None
        if jwt is not None and jwt.secret_env:
            with contextlib.suppress(LichenError):  # a missing secret shows as the gateway's own exit reason
                env.update(read_secrets([jwt.secret_env], self.workspace, NAME))
        return env

    # ------------------------------------------------------------ startup
    def prepare(self) -> None:
        """Before the controller's first pass: re-adopt a healthy gateway left running, clean up the rest,
        and make sure a config exists for a gateway about to start."""
        self._last_text = self._read_text()
        self._adopt()
        self._clean_orphans()
        if self.process.handle is None:
            self._write(self._render())
        self.controller.add_periodic("gateway config", CONFIG_CHECK_S, self.sync)
        self.controller.add_periodic("gateway probes", PROBE.period_s, self.probe)

    def _adopt(self) -> None:
        launcher = self.controller.launcher
        try:
            record = json.loads(record_path(self.workspace).read_text())
        except (OSError, ValueError):
            return
        self.restarts = int(record.get("restarts") or 0)
        if not record.get("pid") or not record.get("port"):
            return
        handle = launcher.adopt(int(record["pid"]), float(record.get("create_time") or 0.0), NAME)
        if handle is None:
            return
        host, port = str(record.get("host") or "127.0.0.1"), int(record["port"])
        deadline = time.monotonic() + self.controller.adopt_wait_s
        while launcher.poll(handle) is None and time.monotonic() < deadline:
            if healthy(host, port):
                self.process.handle = handle
                self.process.started_mono = self.controller.clock.now()
                self.address = (host, port)
                self._seen_handle = handle
                self.readiness = probing.ProbeState("readiness", passing=True, answered=True, last_outcome="ok")
                self._event("Adopted", "pid, start time and health verified", f"pid {handle.pid} port {port}")
                return
            time.sleep(0.1)
        launcher.kill(handle)
        self._event("CleanedUp", "not answering its health check", f"pid {handle.pid}")

    def _clean_orphans(self) -> int:
        """Kill gateway processes of this app that no record knows (started just before a crash)."""
        import psutil

        keep = self.process.handle.pid if self.process.handle else None
        marker = str(self.workspace.app_dir)
        killed = 0
        for process in psutil.process_iter(["pid"]):
            if process.pid in (keep, os.getpid()):
                continue
            with contextlib.suppress(psutil.Error, OSError):
                env = process.environ()
                if env.get("LICHEN_CONTROLLER") == marker and env.get(COMPANION_ENV) == NAME:
                    processes.signal_group(process.pid, signal.SIGKILL)
                    self._event("CleanedUp", "orphan without a record", f"pid {process.pid}")
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
                self.readiness, self.liveness = probing.initial_state("readiness"), probing.initial_state("liveness")
            self._seen_handle = handle
            self._save_record()
        if self.controller.stopping:
            return
        wanted = self._spec_address()
        if handle is not None and wanted is not None and self.address is not None and wanted != self.address:
            self._write(self._render())  # the new address is on disk before the controller starts the next gateway
            self._event("Stopping", "ConfigChanged", f"listen address {self.address} -> {wanted}; SIGTERM")
            self.process.crash_count = 0  # a restart we asked for: no backoff
            self.controller.launcher.terminate(handle)
            self.address = wanted
        if self.controller.app_spec is not self._rendered_from:
            self._dirty = True
        if not self._dirty:
            return
        self._dirty = False
        await self._describe_new_revisions()
        self._write(self._render())

    def mark_dirty(self, version: int = 0, snapshot: object = None) -> None:
        """An endpoint-registry subscriber: render at the next check (which debounces a burst of changes)."""
        self._dirty = True

    def _save_record(self) -> None:
        handle = self.process.handle
        address = self.address or (None, None)
        data = {"pid": handle.pid if handle else None, "create_time": handle.create_time if handle else None,
                "host": address[0], "port": address[1], "restarts": self.restarts}
        atomic_write(record_path(self.workspace), json.dumps(data) + "\n")

    # ------------------------------------------------------------ periodic: probes
    async def probe(self) -> None:
        """One health check: readiness for status, liveness failures kill the gateway (the controller restarts it)."""
        handle = self.process.handle
        if handle is None or self.address is None or self.controller.stopping or handle is not self._seen_handle:
            return
        now = self.controller.clock.now()
        started = self.process.started_mono if self.process.started_mono is not None else now
        if now < started + PROBE.initial_delay_s:
            return
        outcome = await self.controller.prober.probe(self.address[0], self.address[1], PROBE.path, PROBE.timeout_s)
        if self.process.handle is not handle:
            return
        was_ready = self.readiness.passing
        self.readiness = probing.record_probe(self.readiness, PROBE, outcome, now)
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
        return render(app, self.workspace, self.controller.endpoints.endpoints(), self.weight_overrides,
                      self.idempotent)

    def _write(self, config: configs.GatewayConfig) -> bool:
        text = configs.config_text(config)
        if text == self._last_text:
            return False
        configs.write_config(config, self.config_path)
        self._last_text = text
        self.config_writes += 1
        return True

    def _read_text(self) -> str:
        try:
            return self.config_path.read_text()
        except OSError:
            return ""

    async def _describe_new_revisions(self) -> None:
        """Read idempotent POST paths from one ready replica of each revision not asked yet."""
        pending = {}
        for e in self.controller.endpoints.endpoints():
            if (e.service, e.revision) not in self._described:
                pending.setdefault((e.service, e.revision), e)
        if not pending:
            return
        async with httpx.AsyncClient(timeout=1.0) as client:
            for (service, revision), e in pending.items():
                try:
                    response = await client.get(f"http://{e.host}:{e.port}/.well-known/lichen")
                    paths = idempotent_paths_of(response.json()) if response.status_code == 200 else []
                except (httpx.HTTPError, ValueError):
                    continue  # asked again at the next change
                self._described.add((service, revision))
                if paths or service not in self.idempotent:
                    self.idempotent[service] = paths

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
            "url": self.url, "state": state, "pid": process.handle.pid if process.handle else None,
            "port": self.address[1] if self.address else None, "restarts": self.restarts,
            "last_exit_code": process.last_exit_code, "restart_in_s": restart_in,
            "uptime_s": (now - process.started_mono) if running else None,  # type: ignore[operator]
            "upstreams": len(self.controller.endpoints.endpoints()), "config": str(self.config_path),
            "config_writes": self.config_writes, "log": str(self.log_path),
            "revision_weights": {k: dict(v) for k, v in self.weight_overrides.items()},
        }
        if state in ("CrashLoopBackOff", "Exited"):
            tail = processes.log_tail(self.log_path, 8192).splitlines()[-15:]
            entry["log_tail"] = "\n".join(line[:400] for line in tail)
        return entry


def healthy(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """A blocking ``GET /-/healthz`` (used once, at adoption, before the controller loop runs)."""
    try:
        return httpx.get(f"http://{host}:{port}{PROBE.path}", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def attach_gateway(controller: Controller) -> SupervisedGateway:
    """Give ``controller`` its app's gateway (what ``lichen up`` does); call after ``apply``, before ``run``.

    Available afterwards as ``controller.gateway``.
    """
    gateway = SupervisedGateway(controller)
    controller.gateway = gateway
    controller.endpoints.subscribe(gateway.mark_dirty)
    gateway.prepare()
    return gateway
