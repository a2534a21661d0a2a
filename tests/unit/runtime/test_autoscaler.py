"""The autoscaler's shell (lichen.runtime.autoscaling) in the controller's real loop, on virtual time, with a
metric reader twin: scale-up and drained scale-down as events with reasons, its metrics and status, a metric
without data, and ``lichen scale`` refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from lichen.control.plans import Machine
from lichen.errors import ConfigError, UnknownServiceError
from lichen.runtime.autoscaling import attach_autoscaler, quantile_ms
from lichen.runtime.controlling import Controller
from lichen.runtime.replicas import Replica
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0
AUTOSCALE = {"min": 1, "max": 4, "target": 4, "stable_window_s": 10, "panic_window_s": 2,
             "scale_down_stabilization_s": 5}


class Reader:
    """The metric as a function of loop time (None: no data); records which replicas it was asked about."""

    def __init__(self, clock: LoopClock, value: Callable[[float], float | None],
                 started: Callable[[float], float] | None = None) -> None:
        self.clock, self.value, self.started = clock, value, started
        self.asked: list[int] = []

    async def read(self, service: str, metric: str, replicas: list[Replica], metrics_path: str) -> float | None:
        self.asked.append(len(replicas))
        return self.value(self.clock.now() - START)

    async def activity(self, service: str) -> tuple[float, float] | None:
        """The gateway's count of requests started (``started`` of time), nothing in flight."""
        return None if self.started is None else (self.started(self.clock.now() - START), 0.0)


def make(tmp_path: Path, launcher: FakeLauncher, autoscale: dict | None = None) -> Controller:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=FakeProber(), clock=LoopClock(),
                            machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(AppSpec.model_validate({"app": "t", "services": {"api": {
        "entrypoint": "svc:Svc", "termination_grace_s": 1, "autoscale": autoscale or AUTOSCALE}}}), "code1")
    return controller


def events(controller: Controller, kind: str) -> list:
    return [e for e in controller.store.events("api", limit=1000) if e.kind == kind]


def test_a_step_scales_up_at_once_and_back_down_through_drains(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        reader = Reader(controller.clock, lambda t: 16.0 if 3 <= t < 20 else 1.0)
        attach_autoscaler(controller, reader)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 4, "four ready replicas", within_s=30)
        first_up = min(events(controller, "Scaled"), key=lambda e: e.id)
        assert first_up.reason == "autoscaler" and first_up.message.startswith("scaled api 1→")
        assert first_up.at - controller.clock.wall_offset - START <= 4.0  # the first tick after the step
        metrics = generate_latest(controller.metrics).decode()
        assert 'lichen_autoscaler_desired_replicas{service="api"} 4.0' in metrics
        assert 'lichen_autoscaler_panic{service="api"} 1.0' in metrics
        status = controller.status()["services"]["api"]
        assert (status["desired"], status["autoscale"]["desired"]) == (4, 4)
        assert status["autoscale"]["panic"] and "panic window" in status["autoscale"]["reason"]
        await until(lambda: len(launcher.alive()) == 1, "back to one replica", within_s=120)
        down = max(events(controller, "Scaled"), key=lambda e: e.id)
        assert down.message.startswith("scaled api ") and "→1" in down.message and "stable window" in down.message
        assert len(events(controller, "Stopping")) == 3  # each removed replica drained with SIGTERM, none killed
        assert not events(controller, "Killed")
        assert controller.status()["services"]["api"]["autoscale"]["panic"] is False
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_no_metric_data_holds_the_count_with_one_event(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        reader = Reader(controller.clock, lambda t: None)
        attach_autoscaler(controller, reader)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(reader.asked) >= 10, "ten decisions", within_s=30)
        (held,) = events(controller, "AutoscaleHeld")
        assert held.message == "held api at 1: no in-flight sample yet"
        assert controller.services["api"].replicas == 1 and not events(controller, "Scaled")
        assert controller.status()["services"]["api"]["autoscale"]["held"] is True
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_a_failing_reader_holds_and_the_controller_keeps_running(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        calls: list[float] = []

        def broken(t: float) -> float:
            calls.append(t)
            raise RuntimeError("reader bug")

        attach_autoscaler(controller, Reader(controller.clock, broken))
        task = asyncio.create_task(controller.run())
        await until(lambda: len(calls) >= 3, "three decisions", within_s=30)
        assert events(controller, "AutoscaleHeld") and controller.services["api"].replicas == 1
        assert not task.done()
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_lichen_scale_is_refused_on_an_autoscaled_service(tmp_path: Path) -> None:
    async def scenario() -> None:
        controller = make(tmp_path, FakeLauncher())
        with pytest.raises(ConfigError, match=r"api is autoscaled \(autoscale.min 1, max 4\): lichen scale would "
                                              r"be undone by its next decision; change autoscale.min/max in lichen"):
            controller.scale("api", 3)
        assert controller.services["api"].replicas == 1 and not events(controller, "Scaled")

    run_in_virtual_time(scenario(), start=START)


def test_min_0_goes_to_zero_when_idle_and_the_activator_wakes_it_at_once(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher, {**AUTOSCALE, "min": 0, "scale_to_zero_after_s": 8})
        # requests arrive until t=20 (the gateway's started count grows), then none
        reader = Reader(controller.clock, lambda t: 0.0, started=lambda t: min(t, 20.0) // 1)
        autoscaler = attach_autoscaler(controller, reader)
        task = asyncio.create_task(controller.run())
        await until(lambda: controller.services["api"].replicas == 0 and not launcher.alive(), "scaled to zero",
                    within_s=60)
        (down,) = [e for e in events(controller, "Scaled") if e.reason == "autoscaler"]
        idle_for_s = down.at - controller.clock.wall_offset - START - 20.0
        assert 8.0 <= idle_for_s <= 10.0, idle_for_s  # the grace period after the last request, not before
        assert down.message.startswith("scaled api 1→0: no request for ") and "scale_to_zero_after_s 8" in down.message
        assert len(events(controller, "Stopping")) == 1 and not events(controller, "Killed")  # drained
        await controller.clock.sleep(5)
        assert controller.services["api"].replicas == 0 and not launcher.alive()  # stays at zero while idle
        woken = autoscaler.activate("api")
        assert woken == {"service": "api", "desired": 1, "activated": True,
                         "reason": "scaled api 0→1: a request is held at the gateway"}
        await until(lambda: len(controller.endpoints.endpoints("api")) == 1, "a ready replica", within_s=10)
        assert autoscaler.activate("api")["activated"] is False  # already up: nothing more to do
        (up,) = [e for e in events(controller, "Scaled") if e.reason == "activator"]
        assert up.message == "scaled api 0→1: a request is held at the gateway"
        await controller.clock.sleep(4)
        assert controller.services["api"].replicas == 1  # woken, not idle for the grace period yet
        with pytest.raises(UnknownServiceError):
            autoscaler.activate("nope")
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_min_0_without_a_gateway_reading_keeps_one_replica(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher, {**AUTOSCALE, "min": 0, "scale_to_zero_after_s": 2})
        reader = Reader(controller.clock, lambda t: 0.0, started=None)  # no gateway: activity unknown
        attach_autoscaler(controller, reader)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(reader.asked) >= 30, "thirty decisions", within_s=60)
        assert controller.services["api"].replicas == 1 and len(launcher.alive()) == 1
        assert "min 0, requests arriving" in controller.status()["services"]["api"]["autoscale"]["reason"]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_quantile_interpolates_within_a_bucket() -> None:
    assert quantile_ms({0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}, 0.95) == pytest.approx(190.0)
    assert quantile_ms({0.1: 0.0, float("inf"): 0.0}, 0.95) is None


def test_min_0_with_a_latency_metric_goes_to_zero_though_no_request_gives_a_p95(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher, {**AUTOSCALE, "min": 0, "scale_to_zero_after_s": 5,
                                               "metric": "latency_p95_ms", "target": 100})
        reader = Reader(controller.clock, lambda t: None, started=lambda t: 7.0)  # idle: no request finishes
        attach_autoscaler(controller, reader)
        task = asyncio.create_task(controller.run())
        await until(lambda: controller.services["api"].replicas == 0, "scaled to zero", within_s=60)
        assert not events(controller, "AutoscaleHeld")  # idle is data: no request, nothing to measure
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)
