"""The model registry: versions, promotion history, checksums, crash safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lichen import ModelRegistry
from lichen.errors import ConfigError, StateError
from lichen.registry.models import REGISTRY_ENV, default_registry_root


def _model_dir(base: Path, tag: str, files: int = 2) -> Path:
    src = base / f"src-{tag}"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (src / f"part{i}.bin").write_bytes(f"{tag}-{i}".encode() * 100)
    return src


def test_register_increments_versions_and_records_metadata(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    v1 = registry.register("ease", _model_dir(tmp_path, "a"), params={"l2": 500}, metrics={"ndcg": 0.3},
                           dataset_version="ds1")
    v2 = registry.register("ease", _model_dir(tmp_path, "b"), params={"l2": 100}, metrics={"ndcg": 0.4},
                           dataset_version="ds2")
    other = registry.register("als", _model_dir(tmp_path, "c"))
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    got = registry.get("ease", 2)
    assert got.params == {"l2": 100} and got.metrics == {"ndcg": 0.4} and got.dataset_version == "ds2"
    assert got.path == tmp_path / "reg" / "ease" / "v2"
    assert (got.path / "part0.bin").read_bytes() == b"b-0" * 100
    assert got.checksum != v1.checksum and len(got.checksum) == 64
    assert [(m.name, m.version) for m in registry.list()] == [("als", 1), ("ease", 1), ("ease", 2)]
    assert [m.version for m in registry.list("ease")] == [1, 2]
    assert not list((tmp_path / "reg" / ".staging").iterdir())


def test_register_single_file(tmp_path: Path) -> None:
    src = tmp_path / "weights.npy"
    src.write_bytes(b"123")
    mv = ModelRegistry(tmp_path / "reg").register("pop", src)
    assert (mv.path / "weights.npy").read_bytes() == b"123"


def test_promote_and_rollback_follow_a_history_stack(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    for tag in "abc":
        registry.register("ease", _model_dir(tmp_path, tag))
    assert registry.promoted("ease") is None
    with pytest.raises(StateError, match="never been promoted"):
        registry.rollback("ease")
    registry.promote("ease", 1)
    with pytest.raises(StateError, match="no earlier promoted version"):
        registry.rollback("ease")
    registry.promote("ease", 2)
    registry.promote("ease", 2)  # promoting the serving version again is a no-op
    assert registry.promoted("ease").version == 2
    assert [m.promoted for m in registry.list("ease")] == [False, True, False]
    assert registry.rollback("ease").version == 1
    assert registry.promoted_version("ease") == 1
    registry.promote("ease", 3)
    assert registry.rollback("ease").version == 1
    assert [(p.version, p.rolled_back_at is not None) for p in registry.history("ease")] == [
        (1, False), (2, True), (3, True),
    ]


def test_unknown_versions_and_names_are_clear_errors(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.register("ease", _model_dir(tmp_path, "a"))
    with pytest.raises(ConfigError, match=r"no version 7 \(known versions: 1\)"):
        registry.promote("ease", 7)
    with pytest.raises(ConfigError, match="no such model; known: ease"):
        registry.get("als", 1)
    with pytest.raises(ConfigError, match="invalid model name"):
        registry.register("../escape", _model_dir(tmp_path, "b"))
    with pytest.raises(ConfigError, match="does not exist"):
        registry.register("ease", tmp_path / "missing")


def test_verify_detects_changed_files(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    mv = registry.register("ease", _model_dir(tmp_path, "a"))
    assert registry.verify("ease", 1)
    (mv.path / "part1.bin").write_bytes(b"tampered")
    assert not registry.verify("ease", 1)


def test_default_root_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert default_registry_root(tmp_path) == tmp_path / ".lichen" / "models"
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "elsewhere"))
    assert default_registry_root(tmp_path) == tmp_path / "elsewhere"
    assert ModelRegistry().root == tmp_path / "elsewhere"


_KILL_SCRIPT = """
import os, shutil, sys, time
from pathlib import Path
from lichen import ModelRegistry
mode, root, src, ready = sys.argv[1:5]
if mode == "copy":
    real = shutil.copystat  # copy2 calls it after each file's bytes
    count = [0]
    def slow_copystat(a, b, **kw):
        out = real(a, b, **kw)
        count[0] += 1
        if count[0] == 2:
            Path(ready).touch()
            time.sleep(60)
        return out
    shutil.copystat = slow_copystat
else:
    real_rename = os.rename
    def slow_rename(a, b):
        real_rename(a, b)
        if "/.staging/" in str(a):
            Path(ready).touch()
            time.sleep(60)
    os.rename = slow_rename
ModelRegistry(root).register("ease", src, params={"l2": 1})
"""


@pytest.mark.parametrize("mode", ["copy", "commit"])
def test_registering_process_killed_midway_leaves_nothing_visible(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "reg"
    registry = ModelRegistry(root)
    registry.register("ease", _model_dir(tmp_path, "first"))
    src = _model_dir(tmp_path, "second", files=5)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILL_SCRIPT), mode, str(root), str(src), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "registering process exited early"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [m.version for m in registry.list("ease")] == [1]
    with sqlite3.connect(root / "index.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 1
    # The next registration sweeps the orphan and takes the version cleanly.
    mv = registry.register("ease", _model_dir(tmp_path, "third", files=1))
    assert mv.version == 2
    assert sorted(p.name for p in mv.path.iterdir()) == ["part0.bin"]
    assert registry.verify("ease", 2)
    assert list((root / ".staging").iterdir()) == []


def test_registered_versions_are_recorded_as_job_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lichen.registry.artifacts import ARTIFACTS_ENV, read_manifest

    manifest = tmp_path / "manifest"
    monkeypatch.setenv(ARTIFACTS_ENV, str(manifest))
    mv = ModelRegistry(tmp_path / "reg").register("ease", _model_dir(tmp_path, "a"))
    assert read_manifest(manifest) == [str(mv.path)]
