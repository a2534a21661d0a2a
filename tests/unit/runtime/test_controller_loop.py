"""The controller's real loop over in-memory process and probe twins: no subprocess, no socket.

Every scenario runs on virtual time (:class:`lichen.testing.VirtualTimeLoop`): the controller's
ticks, probe periods, backoffs and deadlines are the real ones (Lichen's defaults: 1 s ticks and
probe periods), they take no real time, and the times they produce are checked exactly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lichen.clocks import Clock
from lichen.control.plans import Machine
from lichen.errors import ConfigError
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.sdk.settings import ReplicaSettings
from lichen.spec.models import AppSpec
from lichen.testing import FakeClock, FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0  # where virtual time starts
WALL = LoopClock().wall_offset  # events carry wall time: WALL + loop time


def app_spec(**services: dict) -> AppSpec:
    return AppSpec.model_validate({
        "app": "t",
        "services": {name: {"entrypoint": "svc:Svc", "termination_grace_s": 1, **s} for name, s in services.items()},
    })


def make(tmp_path: Path, launcher: FakeLauncher, prober: FakeProber, gpus: tuple[int, ...] = (),
         clock: Clock | None = None) -> Controller:
    store = StateStore(tmp_path / "state.db")
    return Controller(Workspace(tmp_path), store, launcher=launcher, prober=prober, clock=clock or LoopClock(),
                      machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=gpus))


def kinds(controller: Controller, kind: str, service: str | None = None) -> list:
    return [e for e in controller.store.events(service, limit=1000) if e.kind == kind]


def at(event) -> float:
    """An event's time on the loop's clock."""
    return event.at - WALL


@pytest.fixture
def fakes() -> tuple[FakeLauncher, FakeProber]:
    return FakeLauncher(), FakeProber()


def test_scale_up_publish_scale_down(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={"replicas": 2}), "code1")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("web")) == 2, "two endpoints")
        assert len(launcher.alive()) == 2 and controller.clock.now() == START  # the first probe passes: ready at once
        env = launcher.alive()[0].request.env
        assert env["LICHEN_SERVICE"] == "web" and env["CUDA_VISIBLE_DEVICES"] == "" and env["LICHEN_GRACE_S"] == "1"
        assert (env["LICHEN_METRICS_PATH"], env["LICHEN_SLO_LATENCY_MS"], env["LICHEN_DRAIN_S"]) == ("/metrics", "300", "1")
        settings = ReplicaSettings.from_env(env)  # the replica reads back what the spec said
        assert (settings.replica, settings.grace_s, settings.timeout_s, settings.slo_latency_ms) == (
            launcher.alive()[0].request.name, 1.0, 30.0, (300.0,))
        assert "LICHEN_MAX_INFLIGHT" not in env  # the gateway's limit, not the replica's
        controller.scale("web", 1)
        await until(lambda: len(launcher.alive()) == 1 and len(controller.replicas) == 1, "scale down")
        assert [s for p in launcher.processes.values() for s in p.signals] == ["SIGTERM"]
        assert at(kinds(controller, "Stopping")[0]) == START  # no gateway to confirm a table: SIGTERM at once
        controller.shutdown()
        await asyncio.wait_for(task, 60)
        assert launcher.alive() == [] and controller.store.replicas() == []

    run_in_virtual_time(scenario())


def test_crash_restarts_immediately_then_backs_off(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        clock = controller.clock
        controller.apply(app_spec(web={"restart": {"initial_backoff_s": 30, "max_backoff_s": 60}}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 1, "first start")
        await asyncio.sleep(5)
        launcher.exit(launcher.alive()[0].pid, 3)
        controller.wake()  # what SIGCHLD does
        await until(lambda: len(launcher.processes) == 2 and launcher.alive(), "immediate restart")
        assert clock.now() == START + 5  # the first restart is immediate
        await asyncio.sleep(5)
        launcher.exit(launcher.alive()[0].pid, 3, oom=True)
        controller.wake()
        await until(lambda: kinds(controller, "CrashLoopBackOff"), "CrashLoopBackOff")
        crashed = clock.now()
        assert crashed == START + 10 and len(launcher.processes) == 2
        (row,) = controller.status()["replicas"]
        assert row["state"] == "CrashLoopBackOff" and row["last_exit_reason"] == "OOMKilled"
        assert row["last_exit_code"] == 3 and row["restart_in_s"] == 30.0  # the second restart waits 30 s
        (oom,) = kinds(controller, "OOMKilled")
        assert oom.message == "exit code 3 after 5.0s; restart in 30s" and at(oom) == crashed
        await asyncio.sleep(29.5)
        assert len(launcher.processes) == 2 and controller.status()["replicas"][0]["restart_in_s"] == 0.5
        await until(lambda: len(launcher.processes) == 3, "the restart after the backoff")
        assert at(kinds(controller, "Restarted")[-1]) == crashed + 30  # exactly the backoff, not a tick later
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_a_crash_loop_restarts_at_once_then_after_10_20_40_40_seconds(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={"restart": {"initial_backoff_s": 10, "max_backoff_s": 40}}), "c")
        task = asyncio.create_task(controller.run())
        for n in range(1, 6):
            await until(lambda: len(launcher.processes) == n and launcher.alive(), f"start {n}", within_s=100)
            launcher.exit(launcher.alive()[0].pid, 1)
            controller.wake()
        await until(lambda: len(launcher.processes) == 6, "the 6th start", within_s=100)
        exits = [at(e) for e in kinds(controller, "Exited")]
        restarts = [at(e) for e in kinds(controller, "Restarted")]
        assert [r - e for e, r in zip(exits, restarts)] == [0.0, 10.0, 20.0, 40.0, 40.0]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_liveness_failure_is_killed_at_once_and_restarted(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: controller.endpoints.endpoints("web"), "ready")
        first = launcher.alive()[0]
        port = controller.status()["replicas"][0]["port"]
        await asyncio.sleep(2.5)
        prober.answers[(port, "/healthz")] = "timeout"  # hangs at START + 2.5; liveness probes every 1 s
        await until(lambda: first.returncode is not None, "the liveness kill")
        assert first.signals == ["SIGKILL"]
        (killed,) = kinds(controller, "Killed")
        assert at(killed) == START + 4  # the 2nd failed probe (at +3 s and +4 s), failure_threshold 2
        await until(lambda: launcher.alive() and controller.endpoints.endpoints("web"), "replacement ready")
        assert at(kinds(controller, "Restarted")[0]) == at(kinds(controller, "Ready")[-1]) == START + 4  # in place
        assert killed.reason == "LivenessFailed"
        assert killed.message == "SIGKILL; liveness GET /healthz: timeout 2x in a row"  # which probe, how
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_a_new_controller_readopts_live_replicas_and_restarts_lost_ones(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def first_life() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={"replicas": 2}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints()) == 2, "two ready")
        task.cancel()  # the controller dies without stopping anything
        with pytest.raises(asyncio.CancelledError):
            await task
        controller.store.close()

    async def second_life() -> None:
        await asyncio.sleep(60)  # no controller for a minute
        lost = launcher.alive()[0]
        launcher.exit(lost.pid, -9)
        controller = make(tmp_path, launcher, prober)
        controller.load_desired()
        controller.apply(app_spec(web={"replicas": 2}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints()) == 2, "two ready again")
        assert len(launcher.processes) == 3  # one adopted, one restarted, none duplicated
        assert [e.replica for e in kinds(controller, "Adopted")] != []
        assert [e.replica for e in kinds(controller, "Lost")] == [lost.request.name]
        assert controller.clock.now() == START + 60  # the live one answered at once: adopted without a wait
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    async def both() -> None:
        await first_life()
        await second_life()

    run_in_virtual_time(both())


def test_rolling_update_replaces_every_replica(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={"replicas": 3}), "v1")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints()) == 3, "v1 ready")
        seen: list[int] = []
        controller.endpoints.subscribe(lambda version, endpoints: seen.append(len(endpoints)))
        changed = controller.apply(app_spec(web={"replicas": 3, "env": {"V": "2"}}), "v1")
        assert changed == ["web"]
        revision = controller.services["web"].revision
        await until(lambda: {e.revision for e in controller.endpoints.endpoints()} == {revision}
                    and len(controller.replicas) == 3, "v2 everywhere")
        assert min(seen) >= 3  # max_unavailable 25% of 3 rounds down to 0: never below 3 ready
        await until(lambda: kinds(controller, "RolloutComplete"), "rollout complete")
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_placement_refusal_and_gpu_assignment(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober, gpus=(0, 1))
        controller.apply(app_spec(web={"replicas": 3, "resources": {"gpu": 1}}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints()) == 2, "two placed")
        devices = sorted(p.request.env["CUDA_VISIBLE_DEVICES"] for p in launcher.alive())
        assert devices == ["0", "1"]
        refusals = kinds(controller, "PlacementRefused")
        assert len(refusals) == 1 and "0 of 2 GPUs free" in refusals[0].message
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_missing_secret_is_a_config_error_naming_it(tmp_path: Path, fakes, monkeypatch) -> None:
    launcher, prober = fakes
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    controller = make(tmp_path, launcher, prober, clock=FakeClock())
    with pytest.raises(ConfigError, match=r"services\.web\.secrets: NOPE_TOKEN not set"):
        controller.apply(app_spec(web={"secrets": ["NOPE_TOKEN"]}), "c")


def test_supervises_a_non_replica_process_like_the_gateway(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        from lichen.spec.models import RestartSpec

        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(), "c")
        controller.supervise("gateway", ["lichen", "gateway"], env={"X": "1"},
                             restart=RestartSpec(initial_backoff_s=30, max_backoff_s=60))
        task = asyncio.create_task(controller.run())
        await until(lambda: launcher.by_replica("gateway"), "the gateway start")
        first = launcher.by_replica("gateway")[0]
        assert first.request.env["X"] == "1" and first.request.log_path.name == "gateway.log"
        launcher.exit(first.pid, 1)
        controller.wake()
        await until(lambda: len(launcher.by_replica("gateway")) == 2, "an immediate restart")
        launcher.exit(launcher.by_replica("gateway")[1].pid, 1)
        controller.wake()
        await until(lambda: kinds(controller, "Exited", "gateway")[1:], "second exit")
        assert len(launcher.by_replica("gateway")) == 2  # backing off for 30 s
        assert controller.status()["processes"]["gateway"]["state"] == "BackOff"
        await until(lambda: len(launcher.by_replica("gateway")) == 3, "the restart after the backoff")
        second_exit, third_start = kinds(controller, "Exited", "gateway")[1], kinds(controller, "Started", "gateway")[2]
        assert at(third_start) - at(second_exit) == 30.0
        controller.shutdown()
        await asyncio.wait_for(task, 60)
        assert launcher.alive() == []

    run_in_virtual_time(scenario())


def test_a_rollout_that_never_gets_ready_stalls_and_keeps_the_old_replicas(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        # auto_rollback off: the Deployment behaviour (test_rollbacks.py covers the default, going back)
        rollout = {"max_surge": 1, "max_unavailable": 0, "progress_deadline_s": 120, "auto_rollback": False}
        controller.apply(app_spec(web={"replicas": 2, "rollout": rollout}), "v1")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints()) == 2, "v1 ready")
        old_ports = {e.port for e in controller.endpoints.endpoints()}
        prober.by_path["/readyz"] = "failed"  # nothing new ever passes readiness
        for port in old_ports:
            prober.answers[(port, "/readyz")] = "ok"
        controller.apply(app_spec(web={"replicas": 2, "rollout": rollout, "env": {"V": "2"}}), "v1")
        await until(lambda: kinds(controller, "RolloutStalled"), "the stall", within_s=300)
        started, stalled_event = kinds(controller, "RolloutStarted")[0], kinds(controller, "RolloutStalled")[0]
        assert at(stalled_event) - at(started) == 120.0  # no progress for progress_deadline_s, to the instant
        stalled = controller.status()["services"]["web"]["rollout"]
        assert stalled["status"] == "stalled" and "0/2 replicas of revision" in stalled["reason"]
        assert {e.port for e in controller.endpoints.endpoints()} == old_ports  # old ones keep serving
        assert len(controller.replicas) == 3  # 2 old + the one surge replica, no more
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_a_secret_reaches_only_the_services_that_declare_it(tmp_path: Path, fakes, monkeypatch) -> None:
    """The controller's own environment holds every secret; a replica or a supervised process inherits
    that environment, so undeclared secret names must be taken out of it (Kubernetes: per-pod secrets)."""
    launcher, prober = fakes
    monkeypatch.setenv("API_KEY", "s3cr3t-value")

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)
        controller.apply(app_spec(web={"secrets": ["API_KEY"]}, other={}), "code1")
        controller.supervise("helper", ["helper"])
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 3, "two replicas and the helper")
        env_of = {p.request.name: p.request.env for p in launcher.alive()}
        web = next(env for name, env in env_of.items() if name.startswith("web-"))
        other = next(env for name, env in env_of.items() if name.startswith("other-"))
        assert web["API_KEY"] == "s3cr3t-value"
        assert "API_KEY" not in other
        assert "API_KEY" not in env_of["helper"]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_a_request_over_the_machine_shows_in_status_and_stops_lichen_up_waiting(tmp_path: Path, fakes) -> None:
    from lichen.cli.controlling import settle_failure

    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober)  # 4 cores, 8 GiB
        controller.apply(app_spec(web={"replicas": 1}, big={"replicas": 2, "resources": {"cpu": 16}}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.endpoints.endpoints("web")) == 1, "web ready")
        state = controller.status()
        assert state["services"]["web"]["conditions"] == []
        [condition] = state["services"]["big"]["conditions"]
        assert condition["kind"] == "PlacementRefused" and condition["permanent"]
        assert "cpu 16 is more than this machine has (4 cores)" in condition["message"]
        assert launcher.alive() and all(p.request.name.startswith("web-") for p in launcher.alive())
        failure = settle_failure(state)
        assert failure is not None and "big cannot be placed: big: cpu 16 is more than this machine has" in failure
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_lichen_up_stops_waiting_on_a_crash_loop_and_names_exit_code_and_log() -> None:
    from lichen.cli.controlling import settle_failure

    replica = {"id": "web-abcde-0", "service": "web", "revision": "abcde12345", "state": "CrashLoopBackOff",
               "last_exit_code": 3, "last_exit_reason": "Error",
               "log_tail": "booting\nKeyError: 'MODEL_PATH'\nShutting down\nFinished server process\nreplica stopped\n"}
    state = {"services": {"web": {"revision": "abcde12345", "desired": 1, "ready": 0, "rollout": None,
                                  "conditions": []}}, "replicas": [replica]}
    failure = settle_failure(state)
    assert failure is not None
    assert "web-abcde-0 is in CrashLoopBackOff (Error, exit code 3)" in failure and "KeyError: 'MODEL_PATH'" in failure
    # an old revision crash-looping while the new one rolls out is not the new revision's failure
    old = dict(replica, revision="0ld0000000")
    assert settle_failure(dict(state, replicas=[old])) is None
    assert settle_failure(dict(state, replicas=[dict(replica, state="Starting")])) is None


def test_reapplying_the_spec_keeps_an_autoscaled_count_within_min_max(tmp_path: Path, fakes) -> None:
    launcher, prober = fakes
    controller = make(tmp_path, launcher, prober, clock=FakeClock())
    controller.apply(app_spec(web={"autoscale": {"min": 2, "max": 5}}), "code1")
    assert controller.services["web"].replicas == 2
    controller.set_replicas("web", 4)  # what the autoscaler does under load
    controller.apply(app_spec(web={"autoscale": {"min": 2, "max": 5}}), "code1")
    assert controller.services["web"].replicas == 4, "lichen up again must not drop an autoscaled service to min"
    controller.apply(app_spec(web={"autoscale": {"min": 2, "max": 5}}), "code2")  # a code change rolls...
    assert controller.services["web"].replicas == 4  # ...at the current scale
    controller.apply(app_spec(web={"autoscale": {"min": 1, "max": 3}}), "code2")
    assert controller.services["web"].replicas == 3
    controller.apply(app_spec(web={"replicas": 1}), "code2")  # autoscaling removed: the spec's count again
    assert controller.services["web"].replicas == 1


def test_gpus_named_by_uuid_in_cuda_visible_devices_are_handed_out_by_uuid(tmp_path: Path, fakes,
                                                                              monkeypatch) -> None:
    """Cloud images and MIG set CUDA_VISIBLE_DEVICES to UUIDs; a replica must get one of those, not '0'."""
    from lichen.runtime.workspaces import detect_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_gpus() == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert detect_gpus() == (3, 5)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,MIG-bbb")
    assert detect_gpus() == (0, 1)
    launcher, prober = fakes

    async def scenario() -> None:
        controller = make(tmp_path, launcher, prober, gpus=detect_gpus())
        controller.apply(app_spec(web={"replicas": 2, "resources": {"gpu": 1}}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 2, "two placed")
        assert sorted(p.request.env["CUDA_VISIBLE_DEVICES"] for p in launcher.alive()) == ["GPU-aaa", "MIG-bbb"]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())
