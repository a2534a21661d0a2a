"""The remediation shell in the controller's real loop on virtual time: a firing alert rolls a service back after
a rollout, restarts a named replica, scales up; a dry run only records; each action is an event naming its alert."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.remediating import Remediator
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0


def spec(version: str, rules: list[dict[str, Any]], **remediation: Any) -> AppSpec:
    return AppSpec.model_validate({
        "app": "t", "remediation": {"defaults": False, "rules": rules, **remediation},
        "services": {"api": {"entrypoint": "svc:Svc", "replicas": 2, "termination_grace_s": 1,
                             "env": {"VERSION": version}, "rollout": {"max_unavailable": 1}}}})


def firing(name: str, fired_at: float, **labels: str) -> Any:
    return SimpleNamespace(rule=name, labels={"alertname": name, "service": "api", **labels}, fired_at_s=fired_at,
                           active_at_s=fired_at)


def events(controller: Controller, kind: str) -> list[Any]:
    return [e for e in controller.store.events("api", limit=1000) if e.kind == kind]


def make(tmp_path: Path, launcher: FakeLauncher, rules: list[dict[str, Any]], **remediation: Any) -> Controller:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=FakeProber(), clock=LoopClock(),
                            machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(spec("1", rules, **remediation), "code")
    return controller


def test_an_alert_after_a_rollout_rolls_the_service_back(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    rules = [{"alert": "ApiErrors", "action": "rollback", "within_s_of_rollout": 900}]

    async def scenario() -> None:
        controller = make(tmp_path, launcher, rules)
        remediator = Remediator(controller)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        good = controller.services["api"].revision
        controller.apply(spec("2", rules), "code")
        bad = controller.services["api"].revision
        await until(lambda: {e.revision for e in controller.endpoints.endpoints("api")} == {bad}, "the rollout done")
        await remediator.after_evaluation([firing("ApiErrors", controller.clock.wall())])
        (done,) = events(controller, "Remediation")
        assert done.reason == "rollback" and done.message == f"ApiErrors{{service='api'}} is firing: roll api back " \
                                                               f"to revision {good}"
        (rolled,) = events(controller, "RolloutRolledBack")
        assert rolled.message.startswith(f"{bad} -> {good}: remediation: ApiErrors")
        await until(lambda: {e.revision for e in controller.endpoints.endpoints("api")} == {good}, "rolled back")
        await remediator.after_evaluation([firing("ApiErrors", controller.clock.wall() - 1)])  # the same firing
        assert len(events(controller, "Remediation")) == 1
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_restart_a_named_replica_and_scale_up_and_a_dry_run_that_only_records(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    rules = [{"alert": "Stuck", "action": "restart_replica"}, {"alert": "Busy", "action": "scale_up", "scale_by": 2}]

    async def scenario() -> None:
        controller = make(tmp_path, launcher, rules)
        remediator = Remediator(controller)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        replica = sorted(controller.replicas)[0]
        await remediator.after_evaluation([firing("Stuck", controller.clock.wall(), replica=replica),
                                           firing("Busy", controller.clock.wall())])
        await until(lambda: controller.replicas[replica].record.restarts == 1, "the replica restarted in place")
        assert controller.services["api"].replicas == 4
        assert sorted(e.reason for e in events(controller, "Remediation")) == ["restart_replica", "scale_up"]
        # a dry run: recorded, nothing done
        controller.apply(spec("1", rules, dry_run=True), "code")
        await remediator.after_evaluation([firing("Busy", controller.clock.wall() + 1)])
        (held,) = events(controller, "RemediationHeld")  # the same rule acted on api a moment ago
        assert held.message.startswith("cooldown: this rule acted on api 0 s ago (cooldown_s 300)")
        await controller.clock.sleep(301)
        await remediator.after_evaluation([firing("Busy", controller.clock.wall())])
        (dry,) = events(controller, "RemediationDryRun")  # lichen up set the spec's 2 again, as after lichen scale
        assert dry.message.endswith("scale api from 2 to 4 (dry run: nothing done)")
        assert controller.services["api"].replicas == 2
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)
