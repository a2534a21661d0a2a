"""`lichen init` scaffolds an app that `lichen validate` accepts, whose own tests pass, and that `lichen serve` runs."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

LICHEN = str(Path(sys.executable).with_name("lichen"))


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init")
    result = _lichen("init", "hello", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "lichen serve hello.service:Hello --app-dir hello" in result.stdout
    return root / "hello"


def test_init_writes_spec_service_and_test(scaffold: Path) -> None:
    for relative in ("lichen.yaml", "hello/__init__.py", "hello/service.py", "tests/test_service.py"):
        assert (scaffold / relative).is_file(), relative
    service = (scaffold / "hello" / "service.py").read_text()
    assert "from lichen import Service, endpoint" in service and '@endpoint("/v1/echo"' in service


def test_validate_accepts_the_scaffold(scaffold: Path) -> None:
    result = _lichen("validate", "hello/lichen.yaml", cwd=scaffold.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid: app 'hello', 1 service, 0 jobs, entrypoints import" in result.stdout
    as_json = json.loads(_lichen("validate", str(scaffold), "--json", cwd=scaffold.parent).stdout)
    assert as_json["valid"] is True and as_json["services"] == ["hello"]
    assert as_json["warnings"] == []  # the scaffold suggests nothing that is not built
    assert "autoscale" not in (scaffold / "lichen.yaml").read_text()


def test_validate_reports_a_broken_scaffold_with_line_numbers(scaffold: Path, tmp_path: Path) -> None:
    spec = (scaffold / "lichen.yaml").read_text()
    broken = tmp_path / "lichen.yaml"
    broken.write_text(spec.replace("replicas: 1", "replica: 1").replace("hello.service:Hello", "hello.service:Helo"))
    result = _lichen("validate", str(broken), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert ":6:5 services.hello.entrypoint: cannot import 'hello.service:Helo': no module named 'hello'" in lines[0]
    assert ":7:5 services.hello.replica: unknown key 'replica'; did you mean 'replicas'?" in lines[1]
    assert "2 problems" in result.stderr


def test_scaffold_tests_pass(scaffold: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=scaffold, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_init_refuses_a_non_empty_directory(scaffold: Path) -> None:
    before = sorted(p.name for p in scaffold.iterdir())
    result = _lichen("init", str(scaffold), cwd=scaffold.parent)
    assert result.returncode == 2
    assert "is not empty" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in scaffold.iterdir()) == before


def test_init_into_empty_directory_with_name(tmp_path: Path) -> None:
    target = tmp_path / "Empty Dir"
    target.mkdir()
    result = _lichen("init", str(target), "--name", "shop-api", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["entrypoint"] == "shop_api.service:ShopApi"
    assert (target / "shop_api" / "service.py").is_file()
    assert _lichen("validate", str(target), cwd=tmp_path).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging directory left behind"


@pytest.mark.slow
def test_serve_runs_the_scaffold(scaffold: Path) -> None:
    if importlib.util.find_spec("lichen.sdk.serving") is None:
        pytest.skip("the service SDK (lichen.sdk.serving) is not in this tree yet")
    port = _free_port()
    proc = subprocess.Popen(
        [LICHEN, "serve", "hello.service:Hello", "--app-dir", str(scaffold), "--port", str(port)],
        cwd=scaffold.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "serve exited"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the scaffold never became ready"
            time.sleep(0.1)
        ok = httpx.post(f"{base}/v1/echo", json={"text": "hi"}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"text": "hi", "length": 2}
        bad = httpx.post(f"{base}/v1/echo", json={"txt": "hi"}, timeout=10)
        assert bad.status_code == 422 and "text" in bad.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0


def test_init_in_the_current_empty_directory_takes_its_name(tmp_path: Path) -> None:
    here = tmp_path / "my-app"
    here.mkdir()
    result = _lichen("init", cwd=here)
    assert result.returncode == 0, result.stderr
    assert "lichen serve my_app.service:MyApp --app-dir . --port 8000" in result.stdout
    assert sorted(p.name for p in here.iterdir()) == [".gitignore", "lichen.yaml", "my_app", "pyproject.toml", "tests"]
    assert _lichen("validate", cwd=here).returncode == 0


def test_init_refuses_names_that_clash_with_python(tmp_path: Path) -> None:
    result = _lichen("init", str(tmp_path / "x"), "--name", "json", cwd=tmp_path)
    assert result.returncode == 2 and "clash" in result.stderr
    assert not (tmp_path / "x").exists()
