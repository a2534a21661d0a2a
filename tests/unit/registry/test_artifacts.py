"""atomic_output: whole outputs or nothing, for files and directories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lichen import atomic_output
from lichen.registry.artifacts import ARTIFACTS_ENV, read_manifest, sweep_stale_temps


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_file_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.csv"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent
        tmp.write_text("a,b\n1,2\n")
        assert not target.exists()
    assert target.read_text() == "a,b\n1,2\n"
    assert _siblings(target) == ["data.csv"]


def test_file_exception_leaves_old_content(tmp_path: Path) -> None:
    target = tmp_path / "data.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _siblings(target) == ["data.csv"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupt_removes_temporary(tmp_path: Path, exc: type[BaseException]) -> None:
    target = tmp_path / "model"
    with pytest.raises(exc), atomic_output(target, directory=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"x" * 100)
        raise exc()
    assert list(tmp_path.iterdir()) == []


def test_directory_replaces_existing_tree(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_output(target, directory=True) as tmp:
        assert tmp.is_dir()
        (tmp / "new.bin").write_text("new")
        assert (target / "old.bin").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert _siblings(target) == ["model"]


def test_manifest_records_committed_paths_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "manifest"
    monkeypatch.setenv(ARTIFACTS_ENV, str(manifest))
    with atomic_output(tmp_path / "a.txt") as tmp:
        tmp.write_text("a")
    with pytest.raises(ValueError), atomic_output(tmp_path / "b.txt") as tmp:
        raise ValueError
    with atomic_output(tmp_path / "a.txt") as tmp:
        tmp.write_text("again")
    assert read_manifest(manifest) == [str(tmp_path / "a.txt")]


def test_killed_writer_leaves_no_target_and_stale_temp_is_swept(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from lichen import atomic_output
        with atomic_output({str(target)!r}) as tmp:
            tmp.write_bytes(b"x" * 4096)
            Path({str(ready)!r}).touch()
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never got mid-write"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".big.bin.")]
    assert len(stale) == 1, "SIGKILL cannot clean up; the temporary stays hidden"
    removed = sweep_stale_temps(tmp_path)
    assert removed == stale
    assert not stale[0].exists()


def test_sweep_keeps_temporaries_of_live_writers(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "x.txt") as tmp:
        assert sweep_stale_temps(tmp_path) == []
        assert tmp.exists()
        tmp.write_text("ok")
    assert (tmp_path / "x.txt").read_text() == "ok"
    assert os.listdir(tmp_path) == ["x.txt"]
