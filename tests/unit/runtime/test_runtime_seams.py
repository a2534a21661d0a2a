"""The runtime's edges: SQLite state, endpoint registry, HTTP probes, processes, workspace files."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from lichen.errors import ConfigError
from lichen.runtime import processes
from lichen.runtime.endpoints import Endpoint, EndpointRegistry
from lichen.runtime.probing import port_answers, probe_http
from lichen.runtime.processes import LaunchRequest, ProcessLauncher
from lichen.runtime.state import ReplicaRecord, StateStore, sqlite_path
from lichen.runtime.workspaces import Workspace, code_digest, ensure_token, read_secrets
from lichen.testing import run_in_virtual_time


def test_state_store_is_wal_and_round_trips(tmp_path: Path) -> None:
    store = StateStore(sqlite_path("sqlite:///.lichen/state.db", tmp_path))
    assert store.path == tmp_path / ".lichen" / "state.db"
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    record = ReplicaRecord(id="web-a-0", service="web", revision="a", created_index=0, phase="running", pid=42,
                           create_time=12.5, port=8001, placement={"gpu_indices": [1]}, published=True)
    store.save_replica(record)
    assert store.replicas() == [record]
    store.save_desired("web", "a", 3, 1, {"revision": "a", "status": "progressing"})
    assert store.desired()["web"]["replicas"] == 3
    store.add_event(1.0, "web", "Started", replica="web-a-0")
    store.add_event(2.0, "api", "Started")
    assert [e.service for e in store.events("web")] == ["web"]
    assert [e.kind for e in store.events()] == ["Started", "Started"]
    store.add_event(3.0, "web", "Ready")
    assert store.prune_events(keep=2) == 1 and [e.at for e in store.events()] == [2.0, 3.0]
    other = StateStore(store.path)  # a second connection (the CLI, the job runner) sees committed rows
    assert other.replicas()[0].port == 8001
    store.delete_replica("web-a-0")
    assert other.replicas() == []


def test_endpoint_registry_notifies_subscribers_and_long_polls() -> None:
    registry = EndpointRegistry()
    seen: list[tuple[int, int]] = []
    unsubscribe = registry.subscribe(lambda version, endpoints: seen.append((version, len(endpoints))))
    registry.add(Endpoint("web", "a", "web-a-0", "127.0.0.1", 8001))
    registry.add(Endpoint("web", "a", "web-a-0", "127.0.0.1", 8001))  # no change, no notification
    registry.add(Endpoint("web", "b", "web-b-0", "127.0.0.1", 8002))
    assert seen == [(1, 1), (2, 2)]
    assert [e.replica for e in registry.endpoints("web", "b")] == ["web-b-0"]
    unsubscribe()

    async def long_poll() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(registry.wait_for_change(registry.version, 5.0))
        loop.call_later(2.0, registry.remove, "web-a-0")
        started = loop.time()
        return await waiter, loop.time() - started

    assert run_in_virtual_time(long_poll()) == (3, 2.0) and seen == [(1, 1), (2, 2)]  # answered on the change
    assert run_in_virtual_time(registry.wait_for_change(registry.version, 5.0)) == 3  # nothing changed: at 5 s


def test_probe_outcomes_against_a_real_socket() -> None:
    async def scenario() -> list[str]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = (await reader.readline()).decode()
            if "/hang" in line:
                await asyncio.sleep(5)
            status = "200 OK" if "/ok" in line else "503 Service Unavailable"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        outcomes = [await probe_http("127.0.0.1", port, path, 0.2) for path in ("/ok", "/bad", "/hang")]
        assert await port_answers("127.0.0.1", port, 0.2)
        server.close()
        await server.wait_closed()
        outcomes.append(await probe_http("127.0.0.1", port, "/ok", 0.2))
        return outcomes

    assert asyncio.run(scenario()) == ["ok", "failed", "timeout", "refused"]


def _launch(tmp_path: Path, code: str, memory: int | None = None) -> tuple[ProcessLauncher, processes.ProcessHandle]:
    launcher = ProcessLauncher(use_cgroups=False)
    request = LaunchRequest(name="t", argv=[sys.executable, "-c", code], env=dict(os.environ), cwd=tmp_path,
                            log_path=tmp_path / "logs" / "t.log", memory_bytes=memory, cpu_set=(0,))
    return launcher, launcher.launch(request)


def _wait_exit(launcher: ProcessLauncher, handle: processes.ProcessHandle) -> int:
    deadline = time.monotonic() + 30
    while (code := launcher.poll(handle)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return code


def test_memory_rlimit_failure_is_detected_as_oom_from_the_log(tmp_path: Path) -> None:
    launcher, handle = _launch(tmp_path, "b = bytearray(512 * 2**20)", memory=256 * 2**20)
    code = _wait_exit(launcher, handle)
    assert code == 1
    assert launcher.oom_killed(handle, tmp_path / "logs" / "t.log", memory_limited=True)
    launcher2, ok = _launch(tmp_path, "import os; print(sorted(os.sched_getaffinity(0)))")
    assert _wait_exit(launcher2, ok) == 0
    assert not launcher2.oom_killed(ok, tmp_path / "logs" / "t.log", memory_limited=True)
    assert processes.log_tail(tmp_path / "logs" / "t.log").strip().endswith("[0]")


def test_memory_rlimit_counts_what_a_process_can_dirty_not_its_read_only_maps(tmp_path: Path) -> None:
    """Model weights mapped read-only, shared libraries and reserved address space are not the memory a
    limit means (a cgroup would not count them either); a 256 MiB replica must be able to map 1 GiB of
    weights read-only, and still be stopped when it writes more than 256 MiB."""
    weights = tmp_path / "weights.bin"
    with weights.open("wb") as f:
        f.truncate(1 << 30)  # sparse: no disk used
    code = ("import mmap; f = open('weights.bin', 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); "
            "print('mapped', len(m) >> 20, 'MiB', m[12345])")
    launcher, handle = _launch(tmp_path, code, memory=256 * 2**20)
    assert _wait_exit(launcher, handle) == 0, processes.log_tail(tmp_path / "logs" / "t.log")
    assert "mapped 1024 MiB 0" in processes.log_tail(tmp_path / "logs" / "t.log")
    launcher, handle = _launch(tmp_path, "b = bytearray(300 * 2**20)", memory=256 * 2**20)
    assert _wait_exit(launcher, handle) == 1
    assert launcher.oom_killed(handle, tmp_path / "logs" / "t.log", memory_limited=True)


def test_process_identity_and_group_kill(tmp_path: Path) -> None:
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('grandchild', p.pid, flush=True); time.sleep(60)")
    launcher, handle = _launch(tmp_path, code)
    assert processes.is_alive(handle.pid, handle.create_time)
    assert not processes.is_alive(handle.pid, handle.create_time + 10)  # a recycled pid is not ours
    assert launcher.adopt(handle.pid, handle.create_time + 10, "t") is None
    log = tmp_path / "logs" / "t.log"
    grandchild = int(wait_until(lambda: re.search(r"^grandchild (\d+)$", processes.log_tail(log), re.M),
                                "the child to start its grandchild", 30).group(1))
    assert processes.is_alive(grandchild, None) and os.getpgid(grandchild) == handle.pid  # in the child's group
    launcher.kill(handle)
    assert _wait_exit(launcher, handle) == -signal.SIGKILL
    wait_until(lambda: not processes.group_alive(handle.pid), "the grandchild to go with its group", 10)
    assert not processes.is_alive(grandchild, None)


def test_log_rotation_keeps_backups(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_bytes(b"x" * 100)
    assert processes.rotate_log(log, max_bytes=50)
    assert log.stat().st_size == 0 and (tmp_path / "r.log.1").stat().st_size == 100
    log.write_bytes(b"y" * 60)
    assert processes.rotate_log(log, max_bytes=50)
    assert (tmp_path / "r.log.2").read_bytes() == b"x" * 100
    assert not processes.rotate_log(log, max_bytes=50)


def test_token_is_0600_and_stable_and_secrets_prefer_the_environment(tmp_path: Path, monkeypatch) -> None:
    workspace = Workspace(tmp_path)
    token = ensure_token(workspace)
    assert stat.S_IMODE(workspace.token_path.stat().st_mode) == 0o600 and ensure_token(workspace) == token
    workspace.root.mkdir(exist_ok=True)
    workspace.secrets_file.write_text("# comment\nA_KEY=from-file\nexport B_KEY='quoted'\n")
    monkeypatch.setenv("A_KEY", "from-env")
    assert read_secrets(["A_KEY", "B_KEY"], workspace, "web") == {"A_KEY": "from-env", "B_KEY": "quoted"}
    workspace.secrets_file.write_text("broken line\n")
    with pytest.raises(ConfigError, match="secrets.env:1"):
        read_secrets(["C_KEY"], workspace, "web")


def test_code_digest_follows_code_not_state(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text("x = 1\n")
    first = code_digest(tmp_path)
    (tmp_path / ".lichen").mkdir()
    (tmp_path / ".lichen" / "state.json").write_text("{}")
    assert code_digest(tmp_path) == first
    (tmp_path / "svc.py").write_text("x = 2\n")
    assert code_digest(tmp_path) != first


def test_code_digest_leaves_out_lichen_yaml_so_a_replica_count_edit_does_not_roll(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text("x = 1\n")
    (tmp_path / "lichen.yaml").write_text("services: {web: {entrypoint: 'svc:App', replicas: 1}}\n")
    first = code_digest(tmp_path)
    (tmp_path / "lichen.yaml").write_text("services: {web: {entrypoint: 'svc:App', replicas: 4}}\n")
    assert code_digest(tmp_path) == first
    (tmp_path / "config.yaml").write_text("threshold: 3\n")  # other config files still count as code
    assert code_digest(tmp_path) != first


def test_cgroup_v2_limits_are_written_and_oom_kill_is_read_back(tmp_path: Path) -> None:
    """The cgroup v2 path against a directory laid out like /sys/fs/cgroup (plain files, no kernel)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    launcher = ProcessLauncher(cgroup_root=root)
    assert launcher.use_cgroups and launcher.enforcement == "cgroup v2"
    request = LaunchRequest(name="web-a-0", argv=[sys.executable, "-c", "pass"], env=dict(os.environ), cwd=tmp_path,
                            log_path=tmp_path / "t.log", memory_bytes=256 * 2**20, cpu_cores=1.5, cpu_set=(0, 1))
    handle = launcher.launch(request)
    assert _wait_exit(launcher, handle) == 0
    group = root / "lichen" / "web-a-0"
    assert handle.cgroup == group
    assert (group / "memory.max").read_text() == str(256 * 2**20)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "cpuset.cpus").read_text() == "0,1"
    assert (group / "cgroup.procs").read_text() == str(handle.pid)  # the child joined before exec
    assert not launcher.oom_killed(handle, tmp_path / "t.log", memory_limited=True)
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert launcher.oom_killed(handle, tmp_path / "t.log", memory_limited=True)


def test_a_stale_controller_file_is_named_as_such(tmp_path: Path) -> None:
    """controller.json left by a controller killed with SIGKILL, its pid now reused by another process."""
    import json
    import socket

    from lichen.api.clients import ControlClient
    from lichen.errors import ControlPlaneError

    workspace = Workspace(tmp_path)
    ensure_token(workspace)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workspace.controller_file.write_text(json.dumps({"pid": os.getpid(), "port": port,
                                                     "url": f"http://127.0.0.1:{port}"}))
    with ControlClient(workspace) as client, pytest.raises(ControlPlaneError) as failure:
        client.status()
    assert "no controller answers" in str(failure.value) and "stale" in str(failure.value)
    assert "start one with 'lichen up'" in str(failure.value)


def test_no_controller_but_live_replicas_says_how_to_readopt_or_stop_them(tmp_path: Path) -> None:
    import subprocess

    from lichen.api.clients import ControlClient
    from lichen.errors import ControlPlaneError

    workspace = Workspace(tmp_path)
    with pytest.raises(ControlPlaneError, match="start one with 'lichen up'$"):
        ControlClient(workspace)
    env = dict(os.environ, LICHEN_CONTROLLER=str(tmp_path), LICHEN_REPLICA="web-abcde-0")
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        with pytest.raises(ControlPlaneError, match="1 of its processes still run") as failure:
            ControlClient(workspace)
        assert "'lichen up' re-adopts them, 'lichen down' stops them" in str(failure.value)
    finally:
        orphan.kill()
        orphan.wait()


def test_code_digest_does_not_read_large_data_files(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "svc.py").write_text("x = 1\n")
    big = tmp_path / "vocab.txt"
    big.write_bytes(b"a" * (2 << 20))
    read: list[str] = []
    original = Path.read_bytes

    def spying_read_bytes(self: Path) -> bytes:
        read.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", spying_read_bytes)
    first = code_digest(tmp_path)
    assert read == ["svc.py"]  # the 2 MiB file counted by size and mtime, not read
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 10**9))
    assert code_digest(tmp_path) != first  # touched (re-written) data still rolls


def test_rule_files_are_not_code_but_app_config_is(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    first = code_digest(tmp_path)
    (tmp_path / "alerts.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    assert code_digest(tmp_path) == first  # reloaded by the controller, never rolled out
    (tmp_path / "alerts.yml").write_text("groups:\n  - name: g\n    rules: []\n")
    assert code_digest(tmp_path) == first
    (tmp_path / "settings.yaml").write_text("groups: [a, b]\nthreshold: 3\n")  # a file the app reads
    assert code_digest(tmp_path) != first
