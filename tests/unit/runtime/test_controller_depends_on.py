"""The controller's real loop on virtual time: depends_on orders the start and `lichen down`; replica_ports.

In-memory process and probe twins (:class:`lichen.testing.FakeLauncher`, :class:`FakeProber`); times are
the loop's virtual ones, checked exactly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0
WALL = LoopClock().wall_offset


def make(tmp_path: Path, launcher: FakeLauncher, prober: FakeProber) -> Controller:
    return Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher, prober=prober,
                      clock=LoopClock(), machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30))


def spec(replica_ports: str | None = None, **services: dict) -> AppSpec:
    return AppSpec.model_validate({
        "app": "t", **({"replica_ports": replica_ports} if replica_ports else {}),
        "services": {name: {"entrypoint": "svc:Svc", "termination_grace_s": 1, **s} for name, s in services.items()},
    })


def events(controller: Controller, kind: str, service: str) -> list[float]:
    """The loop times of a service's events of one kind, oldest first."""
    return sorted(e.at - WALL for e in controller.store.events(service, limit=1000) if e.kind == kind)


def test_a_dependent_starts_when_its_dependency_is_ready_and_stops_before_it(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()
    prober.by_path["/db-ready"] = "failed"  # db's readiness fails until the test says otherwise

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(spec(
            db={"replicas": 2, "probes": {"readiness": {"path": "/db-ready"}}},
            api={"depends_on": ["db"]},
            web={"depends_on": ["api"]},
        ), "code")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 2, "db starts")
        await asyncio.sleep(7)
        assert {p.request.name.split("-")[0] for p in launcher.alive()} == {"db"}, "api and web wait"
        (waiting,) = [c for c in controller.status()["services"]["api"]["conditions"]]
        assert waiting["kind"] == "WaitingForDependencies" and "db (0/2 ready)" in waiting["message"]
        assert events(controller, "WaitingForDependencies", "api") == [START]  # one event, not one per pass
        prober.by_path["/db-ready"] = "ok"  # at START + 7; the next readiness probe passes
        await until(lambda: len(launcher.alive()) == 4, "api and web start", within_s=30)
        db_ready = max(events(controller, "Ready", "db"))
        api_started, api_ready = events(controller, "Started", "api")[0], events(controller, "Ready", "api")[0]
        web_started = events(controller, "Started", "web")[0]
        assert START + 7 <= db_ready <= START + 8
        assert api_started == db_ready, "api starts in the pass that sees db ready, not a tick later"
        assert web_started == api_ready >= api_started
        assert controller.status()["services"]["api"]["conditions"] == []

        # the dependency becomes unready later: nothing is stopped (only the start is ordered)
        prober.by_path["/db-ready"] = "failed"
        await until(lambda: not controller.endpoints.endpoints("db"), "db unready")
        await asyncio.sleep(3)
        assert len(launcher.alive()) == 4 and len(controller.endpoints.endpoints("api")) == 1
        controller.scale("api", 2)  # ...but no new api replica while db is unready
        await asyncio.sleep(3)
        assert len(launcher.alive()) == 4
        prober.by_path["/db-ready"] = "ok"
        await until(lambda: len(launcher.alive()) == 5, "the scale-up once db is back", within_s=30)

        controller.shutdown()
        await asyncio.wait_for(task, 60)
        stops = {name: events(controller, "Stopping", name) for name in ("web", "api", "db")}
        exits = {name: events(controller, "Stopped", name) or events(controller, "Exited", name)
                 for name in ("web", "api", "db")}
        assert all(stops.values()) and all(exits.values()), (stops, exits)
        assert max(exits["web"]) <= min(stops["api"]), "api gets SIGTERM only once web has exited"
        assert max(exits["api"]) <= min(stops["db"]), "db gets SIGTERM only once api has exited"
        assert events(controller, "WaitingForDependents", "db"), "the wait is an event"

    run_in_virtual_time(scenario())


def test_replicas_get_distinct_ports_inside_replica_ports_and_a_full_range_fails_the_start(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(spec("41000-41999", web={"replicas": 3}), "code")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("web")) == 3, "three ready")
        ports = [r["port"] for r in controller.status()["replicas"]]
        assert len(set(ports)) == 3 and all(41000 <= p <= 41999 for p in ports)
        first = min(ports)
        controller.apply(spec(f"{first}-{first}", web={"replicas": 3}, extra={}), "code")  # one port: taken
        await until(lambda: any(e.kind == "StartFailed" for e in controller.store.events("extra", limit=100)),
                    "the start of extra fails")
        (failed,) = [e for e in controller.store.events("extra", limit=100) if e.kind == "StartFailed"]
        assert f"no free port in replica_ports {first}-{first}" in failed.message
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())
