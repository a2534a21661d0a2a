"""Resolving `lichen serve` targets; every mistake is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lichen.errors import ConfigError
from lichen.sdk.loading import load_target
from lichen.sdk.wrapping import ReplicaApp

SERVICE = '''
from lichen import Service, endpoint

class Hello(Service):
    @endpoint("/hello", method="GET")
    def hello(self) -> dict:
        return {"hello": "world"}

class Empty(Service):
    pass

async def raw_app(scope, receive, send):
    pass

def not_asgi(x):
    return x
'''


@pytest.fixture()
def app_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    name = f"svc_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(SERVICE)
    (tmp_path / "broken_syntax.py").write_text("def oops(:\n")
    (tmp_path / "raising_module.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "missing_dep.py").write_text("import surely_not_installed_pkg\n")
    return tmp_path


def load(app_dir: Path, attr: str) -> ReplicaApp:
    return load_target(f"{app_dir_module(app_dir)}:{attr}", app_dir)


def app_dir_module(app_dir: Path) -> str:
    return next(p.stem for p in app_dir.glob("svc_*.py"))


def test_a_service_class_and_a_plain_asgi_app_load(app_dir: Path) -> None:
    service = load(app_dir, "Hello")
    assert isinstance(service, ReplicaApp) and service.name == "Hello"
    asgi = load(app_dir, "raw_app")
    assert isinstance(asgi, ReplicaApp) and asgi.inner.__name__ == "raw_app"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nomodule_xyz:Thing", "nomodule_xyz:Thing: no module named 'nomodule_xyz'"),
        ("{m}:Helo", "has no attribute 'Helo'; did you mean 'Hello'?"),
        ("{m}:not_asgi", "is a function, not a lichen Service subclass or an ASGI app"),
        ("{m}:Empty", "declares no @endpoint methods"),
        ("{m}", "expected module:attribute"),
        ("raising_module:X", "importing 'raising_module' raised RuntimeError: no config"),
        ("missing_dep:X", "importing 'missing_dep' failed: No module named 'surely_not_installed_pkg'"),
        ("broken_syntax:X", "broken_syntax.py:1: syntax error"),
        pytest.param("pkg/service.py:Hello", "not a file path: try pkg.service:Hello", id="file_path"),
        pytest.param("service.py:Hello", "not a file path: try service:Hello", id="file_name"),
    ],
)
def test_bad_targets_are_config_errors(app_dir: Path, target: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_target(target.format(m=app_dir_module(app_dir)), app_dir)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_app_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        load_target("x:y", tmp_path / "absent")
