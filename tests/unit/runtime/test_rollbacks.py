"""Rolling updates that give up (rollout.auto_rollback), in the controller's real loop on virtual time: a new
revision that crash-loops, or one that never becomes ready before progress_deadline_s, goes back to the
previous revision with one event; with auto_rollback off it stays stalled; and the pure decision."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from lichen.control.plans import Machine, RolloutState
from lichen.control.rolling import give_up_reason
from lichen.runtime.controlling import Controller
from lichen.runtime.processes import LaunchRequest, ProcessHandle
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0


class BadVersionLauncher(FakeLauncher):
    """Processes whose env has VERSION=bad exit with code 1 right after they start."""

    def launch(self, request: LaunchRequest) -> ProcessHandle:
        handle = super().launch(request)
        if request.env.get("VERSION") == "bad":
            asyncio.get_running_loop().call_soon(self.exit, handle.pid, 1)
        return handle


def spec(version: str, **rollout: Any) -> AppSpec:
    return AppSpec.model_validate({"app": "t", "services": {"api": {
        "entrypoint": "svc:Svc", "replicas": 2, "termination_grace_s": 1, "env": {"VERSION": version},
        "rollout": {"max_surge": 1, "max_unavailable": 0, **rollout}}}})


def make(tmp_path: Path, launcher: FakeLauncher, prober: FakeProber | None = None) -> Controller:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=prober or FakeProber(), clock=LoopClock(),
                            machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(spec("1"), "code")
    return controller


def events(controller: Controller, kind: str) -> list[Any]:
    return [e for e in controller.store.events("api", limit=1000) if e.kind == kind]


def versions_alive(launcher: FakeLauncher) -> list[str]:
    return sorted(p.request.env["VERSION"] for p in launcher.alive())


def test_a_crash_looping_revision_rolls_back_to_the_previous_one(tmp_path: Path) -> None:
    launcher = BadVersionLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        good = controller.services["api"].revision
        controller.apply(spec("bad"), "code")
        bad = controller.services["api"].revision
        await until(lambda: events(controller, "RolloutRolledBack"), "the rollback", within_s=120)
        (rolled,) = events(controller, "RolloutRolledBack")
        assert rolled.message == f"{bad} -> {good}: 1 replica of revision {bad} in CrashLoopBackOff"
        assert controller.services["api"].revision == good and controller.services["api"].previous_revision == ""
        await until(lambda: versions_alive(launcher) == ["1", "1"] and not [
            r for r in controller.replicas.values() if r.record.revision == bad], "the bad replica gone")
        assert len(controller.endpoints.endpoints("api")) == 2  # max_unavailable 0: capacity never dropped
        saved = controller.store.desired()["api"]
        assert saved["revision"] == good  # persisted: a restarted controller does not roll forward again
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_a_revision_that_never_becomes_ready_rolls_back_after_the_progress_deadline(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    prober = FakeProber()

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        good = controller.services["api"].revision
        ports = {r.record.port for r in controller.replicas.values()}
        prober.default = "failed"  # every new replica fails readiness; the old ones keep answering
        for port in ports:
            prober.answers[(port, "/readyz")] = "ok"
            prober.answers[(port, "/healthz")] = "ok"
        prober.by_path["/healthz"] = "ok"
        controller.apply(spec("2", progress_deadline_s=30), "code")
        await until(lambda: events(controller, "RolloutRolledBack"), "the rollback", within_s=120)
        (rolled,) = events(controller, "RolloutRolledBack")
        assert "no progress for 30s: 0/2 replicas of revision" in rolled.message, rolled.message
        assert controller.services["api"].revision == good
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_auto_rollback_off_leaves_the_rollout_stalled(tmp_path: Path) -> None:
    launcher = BadVersionLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        controller.apply(spec("bad", auto_rollback=False, progress_deadline_s=20), "code")
        bad = controller.services["api"].revision
        await until(lambda: events(controller, "RolloutStalled"), "the stall", within_s=120)
        assert controller.services["api"].revision == bad and not events(controller, "RolloutRolledBack")
        assert versions_alive(launcher) == ["1", "1"]  # the old replicas keep serving
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_give_up_reason_is_pure() -> None:
    rollout = RolloutState(revision="abc", started_at=0, last_progress_at=0)
    assert give_up_reason(rollout, 0, True) is None
    assert give_up_reason(rollout, 2, True) == "2 replicas of revision abc in CrashLoopBackOff"
    assert give_up_reason(rollout, 2, False) is None
    stalled = RolloutState(revision="abc", started_at=0, last_progress_at=0, status="stalled", reason="no progress")
    assert give_up_reason(stalled, 0, True) == "no progress"
    done = RolloutState(revision="abc", started_at=0, last_progress_at=0, status="complete")
    assert give_up_reason(done, 3, True) is None
