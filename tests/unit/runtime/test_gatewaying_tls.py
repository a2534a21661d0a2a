"""The gateway under ``lichen up`` with ``gateway.tls``: its rendered config (absolute certificate paths, a plaintext
loopback listener) and the URLs the controller uses (plain, loopback) and shows (https)."""

from __future__ import annotations

import json
from pathlib import Path

from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.gatewaying import attach_gateway, local_url, record_path, render
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time

TLS = {"cert_file": "certs/dev.crt", "key_file": "/etc/ssl/private/app.key", "redirect_http_port": 18081}


def app_spec(tls: dict | None = TLS) -> AppSpec:
    return AppSpec.model_validate({"app": "t", "gateway": {"port": 18443, **({"tls": tls} if tls else {})},
                                   "services": {"web": {"entrypoint": "svc:Svc"}}})


def test_render_makes_certificate_paths_absolute_and_asks_for_a_loopback_listener(tmp_path: Path) -> None:
    config = render(app_spec(), Workspace(tmp_path), [], {}, {}, internal_port=40001)
    assert config.settings.tls is not None
    assert config.settings.tls.cert_file == str(tmp_path / "certs/dev.crt")
    assert config.settings.tls.key_file == "/etc/ssl/private/app.key"  # an absolute path stays
    assert (config.port, config.internal_port) == (18443, 40001)
    plain = render(app_spec(None), Workspace(tmp_path), [], {}, {}, internal_port=40001)
    assert plain.settings.tls is None and plain.internal_port is None  # no TLS: no second listener


def test_urls_with_tls_and_the_internal_port_kept_for_readoption(tmp_path: Path) -> None:
    async def scenario() -> None:
        _check_urls(tmp_path)

    run_in_virtual_time(scenario())


def _check_urls(tmp_path: Path) -> None:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=FakeLauncher(),
                            prober=FakeProber(), clock=LoopClock(),
                            machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(app_spec(), "code1")
    gateway = attach_gateway(controller)
    config = gateway._render()
    port = config.internal_port
    assert port is not None and port > 0
    assert gateway.url == local_url("127.0.0.1", port)  # probes, scrapes, replicas: plain HTTP on loopback
    assert gateway.public_url == "https://127.0.0.1:18443"
    status = gateway.status()
    assert status["url"] == "https://127.0.0.1:18443" and status["internal_url"] == gateway.url
    gateway._save_record()
    assert json.loads(record_path(controller.workspace).read_text())["internal_port"] == port
    again = attach_gateway(controller)
    assert again.internal_port is None
    record = json.loads(record_path(controller.workspace).read_text())
    assert record["internal_port"] == port  # what _adopt reads back (pid-less: nothing to adopt)
