"""What the controller hands a replica and the gateway for redaction and secret masking, and what it keeps back:
the redaction rules and the salt's path, the replica's own secret names, never the store's key; a change to
the rules makes a new revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.gatewaying import render
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.sdk.settings import ReplicaSettings
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until


def app_spec(redact: list | None = None) -> AppSpec:
    return AppSpec.model_validate({
        "app": "t", "observability": {"redact": redact or []},
        "services": {"web": {"entrypoint": "svc:Svc", "termination_grace_s": 1, "secrets": ["API_KEY"]}},
    })


def make(tmp_path: Path, launcher: FakeLauncher) -> Controller:
    return Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                      prober=FakeProber(), clock=LoopClock(), machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30))


def test_a_replica_gets_rules_salt_path_and_secret_names_but_never_the_store_key(tmp_path: Path,
                                                                                monkeypatch) -> None:
    monkeypatch.setenv("API_KEY", "s3cr3t-value")
    monkeypatch.setenv("LICHEN_SECRETS_KEY", "the-key-to-every-secret")
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = make(tmp_path, launcher)
        controller.apply(app_spec(["user_id", {"field": "email", "action": "drop"}]), "code1")
        controller.supervise("helper", ["helper"])
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 2, "the replica and the helper")
        env_of = {p.request.name: p.request.env for p in launcher.alive()}
        web = next(env for name, env in env_of.items() if name.startswith("web-"))
        settings = ReplicaSettings.from_env(web)
        assert settings.secret_names == ("API_KEY",)
        assert settings.redact == ("hash:body:user_id,hash:query:user_id,hash:header:user_id,drop:body:email,"
                                   "drop:query:email,drop:header:email")
        assert settings.redact_salt_file == str(tmp_path / ".lichen" / "redact.salt")
        assert settings.redaction().salt == bytes.fromhex((tmp_path / ".lichen" / "redact.salt").read_text())
        assert "LICHEN_SECRETS_KEY" not in web and "LICHEN_SECRETS_KEY" not in env_of["helper"]
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


@pytest.mark.parametrize("first, second, rolls", [([], [], False), ([], ["user_id"], True),
                                                 (["user_id"], ["user_id"], False), (["user_id"], ["email"], True)])
def test_a_change_to_the_rules_makes_a_new_revision(tmp_path: Path, monkeypatch, first: list, second: list,
                                                    rolls: bool) -> None:
    monkeypatch.setenv("API_KEY", "s3cr3t-value")

    async def scenario() -> None:
        controller = make(tmp_path, FakeLauncher())
        controller.apply(app_spec(first), "code1")
        before = controller.services["web"].revision
        assert (controller.apply(app_spec(second), "code1") == ["web"]) is rolls
        assert (controller.services["web"].revision != before) is rolls

    run_in_virtual_time(scenario())


def test_the_gateway_config_carries_the_rules_and_the_salt_path(tmp_path: Path) -> None:
    config = render(app_spec(["user_id"]), Workspace(tmp_path), [], {}, {})
    assert config.redact == "hash:body:user_id,hash:query:user_id,hash:header:user_id"
    assert config.redact_salt_file == str(tmp_path / ".lichen" / "redact.salt")
