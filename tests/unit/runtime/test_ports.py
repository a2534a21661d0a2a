"""lichen.runtime.ports: replica port ranges, the sticky control port, and naming who holds a taken port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lichen.errors import ControlPlaneError
from lichen.runtime.ports import (
    bind_control_socket,
    check_listen_ports,
    pick_replica_port,
    port_holder,
    remembered_port_path,
)
from lichen.runtime.workspaces import Workspace
from lichen.spec.loading import load_spec


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def write_app(root: Path, text: str) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lichen.yaml").write_text(textwrap.dedent(text))
    return Workspace(root)


def test_replica_ports_stay_in_the_range_skip_taken_and_avoided_ports(listener: socket.socket) -> None:
    taken = listener.getsockname()[1]
    assert pick_replica_port("127.0.0.1", f"{taken}-{taken + 1}") == taken + 1 or not _free(taken + 1)
    with pytest.raises(OSError, match=f"no free port in replica_ports {taken}-{taken}"):
        pick_replica_port("127.0.0.1", f"{taken}-{taken}")
    free = _free_port()
    with pytest.raises(OSError, match="1 held by this app's replicas"):
        pick_replica_port("127.0.0.1", f"{free}-{free}", avoid={free})  # a replica that does not listen yet
    assert pick_replica_port("127.0.0.1", None, avoid={taken}) != taken


def test_a_plain_process_holding_a_port_is_named_by_pid_and_command_line(listener: socket.socket) -> None:
    holder = port_holder("127.0.0.1", listener.getsockname()[1])
    assert holder is not None and holder.pid == os.getpid() and holder.app_dir is None
    assert holder.describe().startswith(f"pid {os.getpid()} (") and "python" in holder.describe()
    assert port_holder("127.0.0.1", _free_port()) is None


def test_a_taken_control_port_is_a_located_error(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    workspace = write_app(tmp_path / "shop", f"""\
        app: shop
        control:
          port: {port}
        """)
    spec = load_spec(workspace.spec_path)
    with pytest.raises(ControlPlaneError) as caught:
        check_listen_ports(workspace, spec)
    text = str(caught.value)
    assert text.startswith(f"{workspace.spec_path}:3:3 control.port: port {port} on 127.0.0.1 is taken by pid "
                           f"{os.getpid()} (")
    assert caught.value.exit_code == 1 and "\n" not in text
    with pytest.raises(ControlPlaneError, match=f"{workspace.spec_path}:3:3 control.port: port {port}"):
        bind_control_socket(workspace, spec)


def test_the_control_port_is_sticky_when_unset_and_exact_when_set(tmp_path: Path) -> None:
    workspace = write_app(tmp_path / "shop", "app: shop\n")
    spec = load_spec(workspace.spec_path)
    with bind_control_socket(workspace, spec) as first:
        port = first.getsockname()[1]
        assert remembered_port_path(workspace).read_text().strip() == str(port)
        with bind_control_socket(workspace, spec) as second:  # the remembered port is busy: another one
            assert second.getsockname()[1] != port
    remembered_port_path(workspace).write_text(f"{port}\n")
    with bind_control_socket(workspace, spec) as again:
        assert again.getsockname()[1] == port, "a restart gets the port of the last run back"
    fixed = _free_port()
    workspace = write_app(tmp_path / "fixed", f"app: fixed\ncontrol: {{port: {fixed}}}\n")
    with bind_control_socket(workspace, load_spec(workspace.spec_path)) as sock:
        assert sock.getsockname()[1] == fixed
    assert not remembered_port_path(workspace).exists()


def test_a_gateway_port_held_by_another_lichen_app_names_that_app(tmp_path: Path) -> None:
    port = _free_port()
    other = write_app(tmp_path / "other", "app: feedback\n")
    mine = write_app(tmp_path / "mine", f"app: mine\ngateway:\n  port: {port}\n")
    code = (f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
            "print('up', flush=True); time.sleep(60)")
    env = {**os.environ, "LICHEN_CONTROLLER": str(other.app_dir), "LICHEN_COMPANION": "gateway"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "up"
        with pytest.raises(ControlPlaneError) as caught:
            check_listen_ports(mine, load_spec(mine.spec_path))
        assert str(caught.value) == (
            f"{mine.spec_path}:3:3 gateway.port: port {port} on 127.0.0.1 is taken by the gateway of app "
            f"'feedback' in {other.app_dir} (pid {process.pid}); stop it with 'lichen down {other.app_dir}', "
            "or give this app another gateway.port")
        # the same app's own gateway, left running by its last controller, is re-adopted: no error
        check_listen_ports(other, load_spec(write_app(other.app_dir, f"app: feedback\ngateway: {{port: {port}}}\n")
                                            .spec_path))
    finally:
        process.kill()
        process.wait()


def test_a_control_port_held_by_another_apps_controller_names_that_app(tmp_path: Path) -> None:
    port = _free_port()
    other = write_app(tmp_path / "other", "app: sentiment\n")
    mine = write_app(tmp_path / "mine", f"app: mine\ncontrol: {{port: {port}}}\n")
    # a controller carries no LICHEN_* mark: it is found by the controller.json of the directory it runs in
    code = (f"import json, os, socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
            "os.makedirs('.lichen', exist_ok=True); "
            "open('.lichen/controller.json', 'w').write(json.dumps({'pid': os.getpid()})); "
            "print('up', flush=True); time.sleep(60)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICHEN_")}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=other.app_dir, env=env, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "up"
        with pytest.raises(ControlPlaneError) as caught:
            check_listen_ports(mine, load_spec(mine.spec_path))
        assert (f"control.port: port {port} on 127.0.0.1 is taken by the controller of app 'sentiment' in "
                f"{other.app_dir} (pid {process.pid})") in str(caught.value)
    finally:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
