"""The control API: FastAPI on loopback (by default), bearer tokens with roles, mounted beside the controller.

``create_api(controller, token, extra_routers=[...])`` builds the app. Every
route declares the least role it needs (:mod:`lichen.control.access`:
``public``, ``viewer``, ``operator``, ``admin``) with a
:class:`~lichen.runtime.access_tokens.RoleCheck` dependency; a route that
declares nothing stops the API from being built. ``token`` (``.lichen/token``)
is the owner's admin token; ``lichen tokens`` adds more in ``.lichen/tokens.db``.
Other components (the observability query API, the dashboard) pass their own
``APIRouter`` objects in ``extra_routers``; a router with no dependencies of
its own serves viewers. ``/healthz`` and ``/metrics`` (controller metrics in
Prometheus text) are public. Every mutating call, allowed or refused, is
appended to the hash-chained audit log (:mod:`lichen.api.auditing`).

``host_controller`` is what ``lichen up`` runs: it takes the per-app lock,
restores and applies desired state, serves the API on ``control.host``/``control.port``
(unset: the port of the app's last run when free, else a free one; :mod:`lichen.runtime.ports`;
written to ``.lichen/controller.json``) and runs the loop until ``lichen
down`` (or SIGTERM/SIGINT) has drained every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, model_validator

from lichen.api.auditing import AuditMiddleware
from lichen.control.access import Role
from lichen.errors import ConfigError, ControlPlaneError, LichenError, StateError, UnknownServiceError
from lichen.runtime.access_tokens import AccessGuard, TokenCache, declared_requirement
from lichen.runtime.audit_logs import AuditLog, record_cli_action
from lichen.runtime.controlling import Controller
from lichen.runtime.autoscaling import Autoscaler, attach_autoscaler
from lichen.runtime.canaries import Canaries, attach_canaries
from lichen.runtime.cron_jobs import attach_cron_jobs
from lichen.runtime.metering import EnergyMeter, attach_energy_meter
from lichen.runtime.remediating import attach_remediation
from lichen.runtime.gatewaying import attach_gateway, local_url
from lichen.runtime.observing import Observing, SpecRefused, attach_observing
from lichen.runtime.ports import bind_control_socket, check_listen_ports
from lichen.runtime.replica_logs import replica_logs_on_disk
from lichen.runtime.state import StateStore, sqlite_path
from lichen.runtime.digesting import service_digests
from lichen.runtime.workspaces import Workspace, atomic_write, ensure_token, read_controller_info
from lichen.spec.loading import load_spec
from lichen.spec.models import MAX_REPLICAS, AppSpec
from lichen.spec.quantities import parse_duration_s


MAX_LOG_LINES = 10000
"""the most lines per replica ``GET /v1/logs`` returns at first (``lichen logs -n``)"""


MAX_SCALE_REPLICAS = MAX_REPLICAS
"""the most replicas ``POST /v1/services/<name>/scale`` sets, as in the spec: each is a process on this machine
(a larger number also overflowed the state store's integer and answered 500, found by tests/fuzz)"""


class ScaleRequest(BaseModel):
    replicas: int = Field(ge=0, le=MAX_SCALE_REPLICAS)


class RolloutAction(BaseModel):
    reason: str = Field(default="", max_length=500)


class FaultRequest(BaseModel):
    kind: Literal["latency", "errors", "reset", "bandwidth"]
    percent: float = Field(default=100.0, gt=0, le=100)
    delay_ms: float = Field(default=0.0, ge=0, le=600_000)
    status: int = Field(default=503, ge=400, le=599)
    rate_kbps: float = Field(default=0.0, ge=0, le=100_000_000)
    duration_s: float = Field(gt=0, le=86_400, description="it ends by itself after this, even if nobody clears it")

    @model_validator(mode="after")
    def _rate_for_bandwidth(self) -> FaultRequest:
        if self.kind == "bandwidth" and self.rate_kbps <= 0:
            raise ValueError("rate_kbps: a bandwidth fault needs a rate above 0")
        return self


class FaultsRequest(BaseModel):
    faults: list[FaultRequest] = Field(max_length=16)


class DiskFaultRequest(BaseModel):
    kind: Literal["slow", "full"]
    delay_ms: float = Field(default=0.0, ge=0, le=60_000)
    duration_s: float = Field(gt=0, le=86_400, description="it ends by itself after this, even if nobody clears it")


class DiskFaultsRequest(BaseModel):
    faults: list[DiskFaultRequest] = Field(max_length=4)


class ReceiverFaultRequest(BaseModel):
    kind: Literal["down"]
    duration_s: float = Field(gt=0, le=86_400, description="it lifts by itself after this, even if nobody clears it")


class ReceiverFaultsRequest(BaseModel):
    faults: list[ReceiverFaultRequest] = Field(max_length=1)


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    expires_in: str | None = Field(default=None, max_length=20, description="a lifetime such as 30d or 12h")


def read_log_chunk(path: Path, offset: int | None, lines: int) -> tuple[str, int]:
    """The text after ``offset`` (or the last ``lines`` lines, none for 0) and the new end offset."""
    try:
        size = path.stat().st_size
    except OSError:
        return "", 0
    if (offset is None or offset > size) and lines <= 0:  # 'lichen logs -f -n 0': only what comes next
        return "", size
    with path.open("rb") as f:
        if offset is None or offset > size:  # first read, or the file was rotated
            start = max(0, size - 64 * 1024)
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else ""), size
        f.seek(offset)
        data = f.read(1024 * 1024)
        return data.decode("utf-8", errors="replace"), offset + len(data)


def refusal(exc: LichenError) -> JSONResponse:
    """422 for a re-applied spec that was refused as a whole: ``error``, ``refused`` and every problem."""
    problems = getattr(exc, "problems", None) or [str(i) for i in getattr(exc, "issues", [])] or [str(exc)]
    message = str(exc) if isinstance(exc, SpecRefused) else SpecRefused(problems).message
    return JSONResponse({"error": message, "refused": True, "problems": problems}, status_code=422)


def access_guard(controller: Controller, token: str) -> AccessGuard:
    """The token check of an app's API: the owner's ``token`` plus ``.lichen/tokens.db``."""
    return AccessGuard(TokenCache(controller.workspace.root / "tokens.db", token), controller.clock.wall)


def create_api(controller: Controller, token: str, extra_routers: Sequence[APIRouter] = (),
               reload_spec: Callable[[], AppSpec] | None = None, observing: Observing | None = None,
               autoscaler: Autoscaler | None = None, canaries: Canaries | None = None,
               meter: EnergyMeter | None = None, guard: AccessGuard | None = None) -> FastAPI:
    """The control API; ``POST /v1/apply`` re-reads the spec with ``reload_spec`` and, with ``observing``,
    applies its rule files and receivers too (or refuses the whole spec, see :func:`refusal`); with
    ``autoscaler``, ``POST /v1/services/<name>/activate`` wakes a service at zero (the gateway's activator); with
    ``canaries``, ``/v1/services/<name>/rollout`` shows and steers a canary rollout; with ``meter`` and
    ``observing``, ``/v1/energy`` reports energy, carbon and the SCI over a window."""
    api = FastAPI(title="Lichen control API", version="1", docs_url=None, redoc_url=None)
    guard = guard or access_guard(controller, token)
    public, viewer = [Depends(guard.requires("public"))], [Depends(guard.requires("viewer"))]
    operator, admin = [Depends(guard.requires("operator"))], [Depends(guard.requires("admin"))]
    v1 = APIRouter(prefix="/v1")
    audit = AuditLog(controller.workspace.root / "audit.log")
    applying = asyncio.Lock()  # two 'lichen up' at once apply one after the other

    @api.exception_handler(LichenError)
    async def _lichen_error(request: Request, exc: LichenError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownServiceError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @api.get("/healthz", dependencies=public)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    @api.get("/metrics", dependencies=public)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(controller.metrics).decode(), media_type=CONTENT_TYPE_LATEST)

    @v1.get("/status", dependencies=viewer)
    async def status() -> dict[str, Any]:
        return controller.status()

    @v1.post("/apply", response_model=None, dependencies=operator)
    async def apply() -> dict[str, Any] | JSONResponse:
        """Apply lichen.yaml again: services roll, rule files and receivers reload; or refuse it all (422).

        The spec, every rule file and the receivers are checked before anything
        changes, so a refused spec leaves services, rules (with their alert
        state) and receivers exactly as they were.
        """
        if reload_spec is None:
            raise ConfigError("this controller cannot reload its spec")
        async with applying:
            try:
                spec = reload_spec()
                update = await asyncio.to_thread(observing.prepare_spec, spec) if observing is not None else None
            except LichenError as exc:
                return refusal(exc)
            # Rule files are reloaded here, not rolled out: those the new spec names and those the running one
            # did, so listing an existing file, or no longer listing one, restarts no replica.
            running = controller.app_spec.observability.rules if controller.app_spec is not None else []
            # Each service's digest covers its own import closure, so only services whose code changed roll;
            # computed in a thread to keep the loop probing.
            digests = await asyncio.to_thread(service_digests, controller.workspace.app_dir, spec,
                                              [*spec.observability.rules, *running])
            before = {n: s.replicas for n, s in controller.services.items()}
            changed = controller.apply(spec, digests)
            observed = await observing.apply_update(update) if observing is not None and update is not None else None
            scaled = {n: [before[n], s.replicas] for n, s in controller.services.items()
                      if n in before and before[n] != s.replicas}
            return {"changed": changed, "scaled": scaled, "added": sorted(set(controller.services) - set(before)),
                    "removed": sorted(set(before) - set(controller.services)),
                    "revisions": {n: s.revision for n, s in controller.services.items()},
                    "observability": observed}

    @v1.post("/services/{service}/scale", dependencies=operator)
    async def scale(service: str, body: ScaleRequest) -> dict[str, Any]:
        controller.scale(service, body.replicas)
        return {"service": service, "replicas": body.replicas}

    @v1.post("/services/{service}/activate", dependencies=operator)
    async def activate(service: str) -> dict[str, Any]:
        """A request is held at the gateway: start a replica of a service at zero now, not at the next tick."""
        if autoscaler is None:
            raise ConfigError("this controller runs no autoscaler: nothing scales to zero")
        return autoscaler.activate(service)

    @v1.get("/services/{service}/rollout", dependencies=viewer)
    async def rollout_status(service: str) -> dict[str, Any]:
        if canaries is None:
            raise ConfigError("this controller runs no canary rollouts")
        return canaries.status(service)

    @v1.post("/services/{service}/rollout/{action}", dependencies=operator)
    async def rollout_action(service: str, action: Literal["promote", "abort", "pause", "resume"],
                             body: RolloutAction | None = None) -> dict[str, Any]:
        if canaries is None:
            raise ConfigError("this controller runs no canary rollouts")
        return canaries.act(service, action, body.reason if body is not None else "")

    @v1.get("/energy", dependencies=viewer)
    async def energy(window_s: Annotated[float, Query(ge=1, le=400 * 86400)] = 3600.0) -> dict[str, Any]:
        """Energy, carbon and the SCI per service and revision over the last ``window_s`` (``lichen energy``)."""
        if meter is None:
            raise ConfigError("energy accounting is not running in this controller")
        if observing is None:
            raise ConfigError("lichen energy reads the embedded Prometheus, which LICHEN_OBSERVE=off turned off for this controller")
        from lichen.observe.energy_reports import energy_report, engine_range_samples

        report = await asyncio.to_thread(energy_report, engine_range_samples(observing.engine), window_s,
                                         controller.clock.wall())
        return {**report, "meter": meter.status()}

    @v1.get("/advice", dependencies=viewer)
    async def advice(window_s: Annotated[float, Query(ge=60, le=400 * 86400)] = 6 * 3600.0,
                     service: str | None = None) -> dict[str, Any]:
        """Right-sizing advice per service from its usage over the last ``window_s`` (``lichen advise``)."""
        if meter is None:
            raise ConfigError("the meter that samples replicas' usage could not start in this controller (see lichen events)")
        if observing is None:
            raise ConfigError("lichen advise reads the embedded Prometheus, which LICHEN_OBSERVE=off turned off for this controller")
        spec = controller.app_spec
        if spec is None:
            raise ConfigError("this controller has no app spec applied yet; try again once 'lichen up' finished")
        if service is not None and service not in spec.services:
            raise UnknownServiceError(f"no service named {service!r} (services: {', '.join(sorted(spec.services))})")
        from lichen.observe.energy_reports import engine_range_samples
        from lichen.observe.usage_reports import advice_report

        basis = "working set" if controller.launcher.use_cgroups else "data segment"
        return await asyncio.to_thread(
            advice_report, engine_range_samples(observing.engine), spec.services, window_s, controller.clock.wall(),
            scrape_interval_s=spec.observability.scrape_interval_s, memory_basis=basis, only=service)

    @v1.post("/services/{service}/restart", dependencies=operator)
    async def restart(service: str) -> dict[str, Any]:
        return {"service": service, "revision": controller.restart(service)}

    @v1.post("/services/{service}/stop", dependencies=operator)
    async def stop(service: str) -> dict[str, Any]:
        controller.scale(service, 0)
        return {"service": service, "replicas": 0}

    @v1.post("/shutdown", dependencies=admin)
    async def shutdown() -> dict[str, Any]:
        controller.shutdown()
        return {"stopping": True, "pids": controller.child_pids()}

    @v1.get("/events", dependencies=viewer)
    async def events(service: str | None = None, limit: Annotated[int, Query(ge=1, le=10000)] = 100,
                     after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> list[dict[str, Any]]:
        return [e.__dict__ for e in controller.store.events(service, limit, after_id)]

    @v1.get("/endpoints", dependencies=viewer)
    async def endpoints(version: int = -1, wait_s: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        """Ready replicas per service; with ``version`` and ``wait_s``, a long poll for the next change."""
        if wait_s > 0:
            await controller.endpoints.wait_for_change(version, wait_s)
        return {"version": controller.endpoints.version,
                "services": {k: [e.to_dict() for e in v] for k, v in controller.endpoints.by_service().items()}}

    @v1.get("/logs/{service}", dependencies=viewer)
    async def logs(service: str, lines: Annotated[int, Query(ge=0, le=MAX_LOG_LINES)] = 50,
                   offsets: str = "{}") -> dict[str, Any]:
        try:
            seen = json.loads(offsets)
        except json.JSONDecodeError:
            seen = None
        if not isinstance(seen, dict) or not all(type(v) is int and v >= 0 for v in seen.values()):  # NaN, [], -1
            raise ConfigError("offsets: expected a JSON object of replica -> byte offset")
        if service not in controller.services and service in controller.auxiliary:  # e.g. lichen logs gateway
            text, end = read_log_chunk(controller.workspace.log_path(service), seen.get(service), lines)
            return {"service": service, "replicas": {service: {"text": text, "offset": end, "live": True}}}
        live = {r.record.id for r in controller.replicas.values() if r.record.service == service}
        on_disk = set(replica_logs_on_disk(controller.workspace, service))
        if not live and service not in controller.services:
            controller._service(service)  # raises: no such service
        result = {}
        for replica_id in sorted(live | on_disk):
            text, end = read_log_chunk(controller.workspace.log_path(replica_id), seen.get(replica_id), lines)
            result[replica_id] = {"text": text, "offset": end, "live": replica_id in live}
        return {"service": service, "replicas": result}

    @v1.put("/services/{service}/faults", dependencies=operator)
    async def set_faults(service: str, body: FaultsRequest) -> dict[str, Any]:
        """Replace a service's traffic faults at the gateway (``lichen chaos``); an empty list clears them."""
        from lichen.gateway.configs import FaultConfig

        controller._service(service)  # raises: no such service
        gateway = controller.gateway
        if gateway is None or not hasattr(gateway, "set_faults"):
            raise ConfigError("this controller runs no gateway to inject traffic faults into")
        now = controller.clock.wall()
        faults = [FaultConfig(kind=f.kind, percent=f.percent, delay_ms=f.delay_ms, status=f.status,
                              rate_kbps=f.rate_kbps, until_wall=now + f.duration_s) for f in body.faults]
        gateway.set_faults(service, faults)
        return {"service": service, "faults": [f.model_dump() for f in faults]}

    @v1.get("/state", dependencies=viewer)
    async def state_store() -> dict[str, Any]:
        """The state store's health: writes waiting for the disk, failed so far, the last error, live disk faults."""
        return controller.store.health()

    @v1.put("/state/faults", dependencies=operator)
    async def set_disk_faults(body: DiskFaultsRequest) -> dict[str, Any]:
        """A slow or full disk under the state store (``lichen chaos``), simulated in its write path: each fault
        ends by itself after ``duration_s``; an empty list clears them."""
        from lichen.control.disk_faults import DiskFault

        now = controller.store.wall()
        controller.store.faults = [DiskFault(f.kind, now + f.duration_s, f.delay_ms) for f in body.faults]
        return controller.store.health()

    def notifier() -> Any:
        if observing is None or observing.notifier is None:
            raise ConfigError("this controller delivers no notifications: the app has no observability.receivers, "
                              "or LICHEN_OBSERVE=off turned the alert engine off")
        return observing.notifier

    @v1.put("/receivers/{receiver}/faults", dependencies=operator)
    async def set_receiver_faults(receiver: str, body: ReceiverFaultsRequest) -> dict[str, Any]:
        """Hold an alert receiver down (``lichen chaos``'s ``receiver_down``): its deliveries fail as a refused
        connection would, and the outbox retries them; an empty list lifts it."""
        now = controller.clock.wall()
        until = now + max(f.duration_s for f in body.faults) if body.faults else None
        try:
            notifier().set_receiver_down(receiver, until)
        except ValueError as exc:
            raise ConfigError(str(exc), where="receiver") from None
        return {"receiver": receiver, "down_until": until}

    @v1.get("/notifications", dependencies=viewer)
    async def notifications(since: Annotated[float, Query(ge=0)] = 0.0,
                            limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> dict[str, Any]:
        """The notifications created from ``since`` (wall s) on, each with its outcome (``pending``,
        ``delivered``, ``failed``, ``superseded``), and the receivers held down (``lichen chaos``)."""
        sender = notifier()
        assert observing is not None
        items = await asyncio.to_thread(sender.store.created_since, since, limit)
        return {"now": controller.clock.wall(), "receivers": sorted(sender.receivers),
                "down_until": sender.receiver_faults(controller.clock.wall()), "retry_max_s": sender.backoff_max_s,
                "max_age_s": sender.max_age_s, "evaluation_interval_s": observing.evaluation_interval_s,
                "notifications": items}

    @v1.get("/tokens", dependencies=admin)
    async def tokens() -> list[dict[str, Any]]:
        """Every control-API token (never its secret): what ``lichen tokens list`` shows."""
        now = controller.clock.wall()
        return [t.public(now) for t in guard.cache.store.all().values()]

    @v1.post("/tokens", dependencies=admin)
    async def create_token(body: TokenRequest) -> dict[str, Any]:
        """A new token with a role; its secret is in this answer only."""
        expires_at = None
        if body.expires_in:
            try:
                expires_at = controller.clock.wall() + parse_duration_s(body.expires_in)
            except ValueError as exc:
                raise ConfigError(str(exc), where="expires_in") from None
        created, secret = guard.cache.store.create(body.name, body.role, expires_at, controller.clock.wall())
        return {**created.public(controller.clock.wall()), "token": secret}

    @v1.delete("/tokens/{token_id}", dependencies=admin)
    async def revoke_token(token_id: str) -> dict[str, Any]:
        return guard.cache.store.revoke(token_id, controller.clock.wall()).public(controller.clock.wall())

    @v1.get("/audit", dependencies=admin)
    async def audit_records(limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        """The last ``limit`` audit records and whether the whole chain verifies (``lichen audit``)."""
        records, report = await asyncio.to_thread(lambda: (audit.records(), audit.verify()))
        return {"records": [r for _, r in records[-limit:] if r is not None], "intact": report.intact,
                "problems": [{"line": n, "problem": p} for n, p in report.problems],
                "head": {"seq": report.head.seq, "hash": report.head.hash}}

    included = [(api.router, []), (v1, [])]
    for router in extra_routers:  # a router that declares nothing itself serves viewers (the query API)
        included.append((router, [] if router.dependencies else viewer))
    roles = route_roles(included)
    undeclared = sorted(f"{method} {path}" for (method, path), needed in roles.items() if needed is None)
    if undeclared:  # a programming error: every route says who may call it (lichen.control.access)
        raise RuntimeError(f"control API routes without a role declaration: {', '.join(undeclared)}")
    for router, dependencies in included[1:]:
        api.include_router(router, dependencies=dependencies)
    api.state.route_roles = roles
    api.add_middleware(AuditMiddleware, audit=audit)
    return api


def route_roles(included: Sequence[tuple[APIRouter, Sequence[Any]]]) -> dict[tuple[str, str], str | None]:
    """``(method, path) -> role`` for every API route of these routers, each with the dependencies it is
    included with; None where a route declares none."""
    roles: dict[tuple[str, str], str | None] = {}
    for router, dependencies in included:
        extra = [d.dependency for d in dependencies]
        for route in router.routes:
            if isinstance(route, APIRoute):
                needed = declared_requirement(route, extra)
                roles.update({(method, route.path): needed for method in route.methods})
    return roles


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def controller_lock(workspace: Workspace) -> Iterator[None]:
    workspace.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(workspace.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = read_controller_info(workspace) or {}
        raise ControlPlaneError(
            f"a controller already runs for {workspace.app_dir} (pid {info.get('pid', '?')}); "
            "use 'lichen status' or 'lichen down'"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def host_controller(
    workspace: Workspace,
    *,
    extra_routers: Sequence[APIRouter] = (),
    on_ready: Callable[[Controller], None] | None = None,
    controller_factory: Callable[[Workspace, StateStore], Controller] | None = None,
) -> None:
    """Run one app's controller and API until it is shut down (see module docs)."""
    spec = load_spec(workspace.spec_path)
    with controller_lock(workspace):
        check_listen_ports(workspace, spec)  # another app on the gateway's port: one clear error, no crash loop
        token = ensure_token(workspace)
        store = StateStore(sqlite_path(spec.state.url, workspace.app_dir))
        controller = (controller_factory or (lambda ws, st: Controller(ws, st)))(workspace, store)
        controller.load_desired()
        controller.apply(spec, service_digests(workspace.app_dir, spec, spec.observability.rules), starting=True)
        attach_gateway(controller)
        autoscaler = attach_autoscaler(controller)
        canaries = attach_canaries(controller)
        meter = attach_energy_meter(controller, spec.sustainability, workspace.app_dir)
        cron_jobs = attach_cron_jobs(controller, workspace.app_dir)
        controller.add_periodic("state store retries", 1.0, store.retry_pending)  # writes a full disk held back
        sock = bind_control_socket(workspace, spec)  # control.host/control.port, or the port of the last run
        port = sock.getsockname()[1]
        url = local_url(spec.control.host, port)
        observing = attach_observing(controller, spec, token=token, api_url=url)
        remediator = None
        if observing is not None:
            remediator = attach_remediation(controller, observing, canaries)
            canaries.query = observing.engine.instant_samples  # analysis.queries on the embedded Prometheus
            canaries.announce = observing.announce  # a rolled-back canary notifies through the receivers

        guard = access_guard(controller, token)
        routers = [*extra_routers, *(observing.routers(guard.requires) if observing is not None else [])]
        api = create_api(controller, token, routers, reload_spec=lambda: load_spec(workspace.spec_path),
                         observing=observing, autoscaler=autoscaler, canaries=canaries, meter=meter, guard=guard)
        # log_config=None: uvicorn's records reach the process's handler (lichen.logs.configure), one style
        server = _QuietServer(uvicorn.Config(api, log_level="warning", log_config=None, access_log=False,
                                             lifespan="off"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, controller.shutdown)
        api_task = asyncio.create_task(server.serve(sockets=[sock]))
        run_task = asyncio.create_task(controller.run())
        try:
            while not server.started and not api_task.done():
                await asyncio.sleep(0.01)
            if api_task.done():
                raise StateError(f"the control API could not start: {api_task.exception()}")
            info = {"pid": os.getpid(), "port": port, "host": spec.control.host, "app_dir": str(workspace.app_dir),
                    "url": url}
            atomic_write(workspace.controller_file, json.dumps(info) + "\n", mode=0o600)
            atomic_write(workspace.pid_file, f"{os.getpid()}\n")
            record_cli_action(workspace.root, "up", {"pid": os.getpid(), "url": url,
                                                     "services": sorted(spec.services)})
            if on_ready is not None:
                on_ready(controller)
            await run_task
        finally:
            if not run_task.done():
                controller.shutdown()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(run_task, 120)
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(api_task, 5)
            for path in (workspace.controller_file, workspace.pid_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.remove_signal_handler(sig)
            for shell in (cron_jobs, remediator, canaries, autoscaler, meter):  # their HTTP clients and job tasks
                if shell is not None:
                    with contextlib.suppress(Exception):
                        await shell.aclose()
            if observing is not None:
                await observing.aclose()
            store.close()
