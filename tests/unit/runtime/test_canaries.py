"""Canary rollouts in the controller's real loop, on virtual time, with a twin of the gateway's per-revision
counters: a bad canary is aborted and drained while the stable revision keeps every replica, a good one steps
through its weights and is promoted, a second rollout and a restart are refused meanwhile, manual actions,
and a controller restarted mid-rollout resumes it from the state store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lichen.control.plans import Machine
from lichen.errors import ConfigError
from lichen.runtime.canaries import Canaries, Totals, attach_canaries, revision_totals
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0
ROLLOUT = {"strategy": "canary", "steps": [10, 50, 100],
           "analysis": {"interval_s": 2, "min_requests": 20, "max_error_ratio": 0.01}}


def spec(version: str) -> AppSpec:
    return AppSpec.model_validate({"app": "t", "services": {"api": {
        "entrypoint": "svc:Svc", "replicas": 2, "termination_grace_s": 1, "env": {"VERSION": version},
        "rollout": ROLLOUT}}})


class Gateway:
    """What the gateway would count: every revision in the table answers ``rate`` requests/s at its weight's
    share; the canary fails ``canary_errors`` of them and takes ``canary_ms`` per request."""

    def __init__(self, controller: Controller, canary_errors: float = 0.0, canary_ms: float = 5.0) -> None:
        self.controller, self.canary_errors, self.canary_ms = controller, canary_errors, canary_ms
        self.totals: dict[str, Totals] = {}
        self.at = controller.clock.now()
        self.weights: dict[str, dict[str, float]] = {}
        self.url = None  # the supervised gateway's address: none here

    def view(self) -> None:
        return None  # no table to confirm: a stopping replica is signalled at once, as without a gateway

    def status(self) -> dict[str, Any]:
        return {}

    def set_revision_weights(self, service: str, weights: dict[str, float] | None) -> None:
        if weights:
            self.weights[service] = dict(weights)
        else:
            self.weights.pop(service, None)

    async def read(self, service: str) -> dict[str, Totals] | None:
        now = self.controller.clock.now()
        elapsed, self.at = now - self.at, now
        state = self.controller.services[service]
        weights = self.weights.get(service) or {state.revision: 100.0}
        canary = state.revision if state.canary else None
        for revision, weight in weights.items():
            n = 100.0 * elapsed * weight / 100
            entry = self.totals.setdefault(revision, Totals())
            failing = self.canary_errors if revision == canary else 0.0
            entry.attempts += n
            entry.errors += round(n * failing)
            le = 0.25 if revision == canary and self.canary_ms > 100 else 0.01
            for bound in (0.01, 0.25, float("inf")):
                entry.buckets[bound] = entry.buckets.get(bound, 0.0) + (n if bound >= le else 0.0)
        return {k: Totals(v.attempts, v.errors, dict(v.buckets)) for k, v in self.totals.items()}


def wire(controller: Controller, gateway: Gateway) -> Canaries:
    """The gateway twin as the controller's gateway and as the canaries' reader."""
    controller.gateway = gateway  # type: ignore[assignment]
    return attach_canaries(controller, gateway)


def make(tmp_path: Path, launcher: FakeLauncher) -> Controller:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=FakeProber(), clock=LoopClock(),
                            machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(spec("1"), "code")
    return controller


def kinds(controller: Controller) -> list[str]:
    return [e.kind for e in sorted(controller.store.events("api", limit=1000), key=lambda e: e.id)]


def messages(controller: Controller, kind: str) -> list[str]:
    return [e.message for e in controller.store.events("api", limit=1000) if e.kind == kind]


def revisions_alive(controller: Controller, launcher: FakeLauncher) -> dict[str, int]:
    alive = {h.pid for h in launcher.alive()}
    counts: dict[str, int] = {}
    for replica in controller.replicas.values():
        if replica.record.pid in alive and replica.record.phase == "running":
            counts[replica.record.revision] = counts.get(replica.record.revision, 0) + 1
    return counts


async def start_canary(controller: Controller, launcher: FakeLauncher) -> tuple[str, str, asyncio.Task[Any]]:
    task = asyncio.create_task(controller.run())
    await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
    stable = controller.services["api"].revision
    controller.apply(spec("2"), "code")
    canary = controller.services["api"].revision
    assert canary != stable and controller.services["api"].canary is not None
    await until(lambda: canary in {e.revision for e in controller.endpoints.endpoints("api")}, "a ready canary")
    return stable, canary, task


def test_a_failing_canary_is_aborted_and_drained_while_stable_keeps_every_replica(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        gateway = Gateway(controller, canary_errors=0.3)
        canaries = wire(controller, gateway)
        announced: list[tuple[str, dict[str, str], dict[str, str]]] = []
        canaries.announce = lambda name, labels, annotations: announced.append((name, labels, annotations))
        stable, canary, task = await start_canary(controller, launcher)
        assert revisions_alive(controller, launcher) == {stable: 2, canary: 1}  # the canary is extra capacity
        await until(lambda: gateway.weights.get("api") == {stable: 90.0, canary: 10.0}, "the first step's split")
        await until(lambda: "CanaryAborted" in kinds(controller), "the abort", within_s=30)
        (aborted,) = messages(controller, "CanaryAborted")
        assert aborted.startswith(f"{canary} rolled back to {stable}: aborted at weight 10") and "error ratio" in aborted
        assert gateway.weights["api"] == {stable: 100.0, canary: 0.0}  # at once, before the canary drains
        (note,) = announced  # a notification through the receivers, with the numbers
        assert note[0] == "LichenCanaryAborted" and note[1]["service"] == "api"
        assert note[2]["description"] == aborted
        assert controller.services["api"].revision == stable and controller.services["api"].canary is None
        await until(lambda: revisions_alive(controller, launcher) == {stable: 2}, "the canary drained")
        await until(lambda: "api" not in gateway.weights, "the fixed split cleared once the canary has gone")
        assert not [m for m in messages(controller, "Stopping") if stable[:5] in m]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_a_good_canary_steps_through_its_weights_and_is_promoted(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        gateway = Gateway(controller)
        canaries = wire(controller, gateway)
        stable, canary, task = await start_canary(controller, launcher)
        with pytest.raises(ConfigError, match=rf"api: a canary rollout of revision {canary} is in progress \(weight "
                                              rf"10%, stable {stable}\)"):
            controller.apply(spec("3"), "code")  # refused: one rollout at a time, nothing changed
        assert controller.services["api"].revision == canary
        with pytest.raises(ConfigError, match="a canary rollout"):
            controller.restart("api")
        await until(lambda: "CanaryPromoted" in kinds(controller), "the promotion", within_s=60)
        steps = messages(controller, "CanaryStep")
        assert [m.split(":")[0] for m in steps] == ["weight 10% → 50%", "weight 50% → 100%"]
        assert controller.services["api"].revision == canary and controller.services["api"].canary is None
        await until(lambda: revisions_alive(controller, launcher) == {canary: 2}, "the stable revision drained")
        status = canaries.status("api")
        assert status["canary"] is None and status["last_analysis"]["verdict"] == "pass"
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_pause_resume_abort_by_hand(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        gateway = Gateway(controller)
        canaries = wire(controller, gateway)
        stable, canary, task = await start_canary(controller, launcher)
        paused = canaries.act("api", "pause")
        assert paused["action"] == "pause" and paused["phase"] == "paused"
        await controller.clock.sleep(20)
        assert controller.services["api"].canary["state"]["weight"] == 10  # paused: nothing advanced
        assert canaries.act("api", "resume")["phase"] == "progressing"
        aborted = canaries.act("api", "abort", "wrong model file")
        assert aborted["action"] == "abort" and "wrong model file" in aborted["reason"]
        assert messages(controller, "CanaryAborted")[0].endswith("aborted by hand at weight 10: wrong model file")
        with pytest.raises(ConfigError, match="api has no canary rollout in progress"):
            canaries.act("api", "promote")
        await until(lambda: revisions_alive(controller, launcher) == {stable: 2}, "the canary drained")
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_a_restarted_controller_resumes_the_canary_from_the_state_store(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def first() -> tuple[str, str]:
        controller = make(tmp_path, launcher)
        gateway = Gateway(controller)
        controller.gateway = gateway  # type: ignore[assignment]
        attach_canaries(controller, Gateway(controller, canary_errors=0.0))
        stable, canary, task = await start_canary(controller, launcher)
        task.cancel()  # the controller dies: no shutdown, replicas left running
        await asyncio.gather(task, return_exceptions=True)
        return stable, canary

    stable, canary = run_in_virtual_time(first(), start=START)

    async def second() -> None:
        again = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                           prober=FakeProber(), clock=LoopClock(),
                           machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
        again.load_desired()
        state = again.services["api"]
        assert state.revision == canary and state.canary is not None and state.canary["stable"] == stable
        assert state.canary["state"]["weight"] == 10
        gateway = Gateway(again)
        again.gateway = gateway  # type: ignore[assignment]
        attach_canaries(again, gateway)
        assert gateway.weights["api"] == {stable: 100.0, canary: 0.0}  # no ready canary seen yet: all to stable
        plan = again.desired_state().services["api"].canary
        assert plan is not None and (plan.stable_revision, plan.canary_replicas) == (stable, 1)

    run_in_virtual_time(second(), start=START)


def test_revision_totals_read_the_gateways_exposition() -> None:
    text = """# TYPE lichen_gateway_upstream_attempts_total counter
lichen_gateway_upstream_attempts_total{outcome="ok",revision="aaa",service="api"} 90.0
lichen_gateway_upstream_attempts_total{outcome="http_5xx",revision="aaa",service="api"} 10.0
lichen_gateway_upstream_attempts_total{outcome="client_error",revision="aaa",service="api"} 5.0
lichen_gateway_upstream_attempts_total{outcome="ok",revision="bbb",service="api"} 50.0
lichen_gateway_upstream_attempts_total{outcome="ok",revision="ccc",service="other"} 7.0
# TYPE lichen_gateway_request_duration_seconds histogram
lichen_gateway_request_duration_seconds_bucket{le="0.01",revision="aaa",route="/a",service="api"} 60.0
lichen_gateway_request_duration_seconds_bucket{le="+Inf",revision="aaa",route="/a",service="api"} 100.0
lichen_gateway_request_duration_seconds_bucket{le="0.01",revision="aaa",route="/b",service="api"} 5.0
lichen_gateway_request_duration_seconds_bucket{le="+Inf",revision="aaa",route="/b",service="api"} 5.0
"""
    totals = revision_totals(text, "api")
    assert set(totals) == {"aaa", "bbb"}
    assert (totals["aaa"].attempts, totals["aaa"].errors) == (100.0, 10.0)  # a client's error is not the revision's
    assert totals["aaa"].buckets == {0.01: 65.0, float("inf"): 105.0}  # summed over routes
    window = totals["aaa"].since(Totals(40.0, 2.0, {0.01: 15.0, float("inf"): 45.0}))
    assert (window.requests, window.errors) == (60.0, 8.0) and window.latency_buckets == ((0.01, 50.0),
                                                                                           (float("inf"), 60.0))


def test_an_extra_query_fails_a_canary_whose_value_is_too_far_above_stables(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    asked: list[str] = []

    def query(text: str, at: float) -> list[tuple[dict[str, str], float]]:
        asked.append(text)
        # two replicas' series of the stable revision, one of the canary's: summed per revision
        return [({"replica": "a"}, 1.0), ({"replica": "b"}, 1.0)] if 'revision="stable' in text else [({}, 9.0)]

    def with_query(version: str) -> AppSpec:
        app = spec(version).model_dump()
        app["services"]["api"]["rollout"]["analysis"]["queries"] = [
            {"name": "cpu", "query": 'sum(rate(cpu{service="$service",revision="$revision"}[$interval]))',
             "max_ratio": 2.0}]
        return AppSpec.model_validate(app)

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        controller.apply(with_query("1"), "code")
        gateway = Gateway(controller)
        controller.gateway = gateway  # type: ignore[assignment]
        attach_canaries(controller, gateway, query=lambda text, at: query(
            text.replace(f'revision="{stable_of(controller)}"', 'revision="stable"'), at))
        stable, canary, task = await start_canary_with(controller, with_query("2"))
        await until(lambda: "CanaryAborted" in kinds(controller), "the abort on the query", within_s=30)
        (aborted,) = messages(controller, "CanaryAborted")
        assert "cpu" in aborted and "4.5" in aborted, aborted  # 9 over 2: a ratio above max_ratio 2
        assert f'sum(rate(cpu{{service="api",revision="{canary}"}}[2s]))' in asked
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def stable_of(controller: Controller) -> str:
    state = controller.services["api"]
    return state.canary["stable"] if state.canary else state.revision


async def start_canary_with(controller: Controller, new: AppSpec) -> tuple[str, str, asyncio.Task[Any]]:
    task = asyncio.create_task(controller.run())
    await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
    stable = controller.services["api"].revision
    controller.apply(new, "code")
    canary = controller.services["api"].revision
    await until(lambda: canary in {e.revision for e in controller.endpoints.endpoints("api")}, "a ready canary")
    return stable, canary, task


def test_query_text_fills_in_the_service_revision_and_interval() -> None:
    from lichen.runtime.canaries import query_text

    text = query_text('rate(x{service="$service",revision="$revision"}[$interval])', "api", "abc", 10)
    assert text == 'rate(x{service="api",revision="abc"}[10s])'
    assert query_text("x[$interval]", "api", "abc", 2.5) == "x[2500ms]"


class SlowGateway(Gateway):
    """Each read waits until the test releases it: a hand acts while the canary tick is reading."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(controller)
        self.arrived: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self.free = False

    async def read(self, service: str) -> dict[str, Totals] | None:
        totals = await super().read(service)
        if not self.free:
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.arrived.put_nowait(gate)
            await gate
        return totals


def test_a_pause_while_the_tick_reads_is_not_undone_by_it(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        gateway = SlowGateway(controller)
        canaries = wire(controller, gateway)
        stable, canary, task = await start_canary(controller, launcher)

        def analysing() -> bool:  # the read in flight will be judged: a baseline at this weight was taken before
            base = canaries.baselines.get("api")
            state = controller.services["api"].canary
            return base is not None and state is not None and base.weight == state["state"]["weight"]

        while True:  # let reads through until one in flight is an analysis, then act while it waits
            gate = await asyncio.wait_for(gateway.arrived.get(), 60)
            if analysing():
                break
            gate.set_result(None)
        paused = canaries.act("api", "pause")
        assert paused["phase"] == "paused"
        steps_before = kinds(controller).count("CanaryStep")
        gateway.free = True
        gate.set_result(None)  # the read in flight finishes: its verdict must not overwrite the pause
        await controller.clock.sleep(30)
        state = controller.services["api"].canary
        assert state is not None and state["state"]["paused"] and state["state"]["weight"] == paused["weight"]
        assert "CanaryPromoted" not in kinds(controller) and kinds(controller).count("CanaryStep") == steps_before
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario(), start=START)


def test_a_controller_started_with_a_new_spec_abandons_the_saved_canary_instead_of_refusing(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def first() -> tuple[str, str]:
        controller = make(tmp_path, launcher)
        gateway = Gateway(controller)
        wire(controller, gateway)
        stable, canary, task = await start_canary(controller, launcher)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stable, canary

    stable, canary = run_in_virtual_time(first(), start=START)

    async def second() -> None:
        again = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                           prober=FakeProber(), clock=LoopClock(),
                           machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
        again.load_desired()
        with pytest.raises(ConfigError, match="a canary rollout"):
            again.apply(spec("3"), "code")  # a running controller refuses: lichen rollout abort can reach it
        again.apply(spec("3"), "code", starting=True)
        state = again.services["api"]
        assert state.revision not in (stable, canary) and state.previous_revision == stable
        assert state.canary is not None and state.canary["stable"] == stable  # a new canary, from the stable one
        (abandoned,) = [e for e in again.store.events("api", limit=100) if e.kind == "CanaryAbandoned"]
        assert abandoned.message.startswith(f"the canary of {canary} was in progress when the controller stopped; "
                                            f"back to {stable}, then {state.revision} rolls out")

    run_in_virtual_time(second(), start=START)


def test_a_controller_started_on_a_new_spec_starts_a_canary_beside_the_replicas_it_will_adopt(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def first() -> str:
        controller = make(tmp_path, launcher)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("api")) == 2, "two ready replicas")
        task.cancel()  # killed: its replicas keep running, recorded as published
        await asyncio.gather(task, return_exceptions=True)
        return controller.services["api"].revision

    stable = run_in_virtual_time(first(), start=START)

    async def second() -> None:
        again = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                           prober=FakeProber(), clock=LoopClock(),
                           machine=Machine(cpu_cores=8, memory_bytes=8 * 2**30, gpu_indices=()))
        again.load_desired()
        assert again.endpoints.endpoints("api") == []  # nothing adopted yet
        again.apply(spec("2"), "code", starting=True)
        state = again.services["api"]
        assert state.canary is not None and state.canary["stable"] == stable  # a canary, not a rolling update

    run_in_virtual_time(second(), start=START)
