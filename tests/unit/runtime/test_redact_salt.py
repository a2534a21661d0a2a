"""The app's redaction salt is made once and whole: a crash while making it never leaves a file that breaks every
later start, an empty file an older crash left is made again, and processes racing to make it agree on one salt."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from lichen.errors import ConfigError
from lichen.redacting import read_salt
from lichen.runtime import workspaces
from lichen.runtime.workspaces import Workspace, ensure_redact_salt


class PowerCut(BaseException):
    """The process stops here: nothing after it runs, no handler sees it (as with a kill or a power cut)."""


def test_the_salt_is_made_once_whole_and_private(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    path = ensure_redact_salt(workspace)
    salt = read_salt(path)
    assert len(salt) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_salt(ensure_redact_salt(workspace)) == salt  # kept: tokens were made from it
    assert sorted(p.name for p in workspace.root.iterdir()) == ["redact.salt", "redact.salt.lock"]  # no temp left


@pytest.mark.parametrize("crash_in", ["write", "fsync", "replace"])
def test_a_crash_while_making_the_salt_leaves_none_and_the_next_start_makes_it(tmp_path: Path, monkeypatch,
                                                                               crash_in: str) -> None:
    """Before, the file was created first and written after: a crash between left it empty, and every later
    start of a replica or the gateway failed with "not a redaction salt"."""
    workspace = Workspace(tmp_path)
    real = getattr(os, crash_in)

    def crash(*args: object) -> None:
        raise PowerCut(crash_in)

    monkeypatch.setattr(workspaces.os, crash_in, crash)
    with pytest.raises(PowerCut):
        ensure_redact_salt(workspace)
    monkeypatch.setattr(workspaces.os, crash_in, real)
    assert not workspace.redact_salt_file.exists()
    assert len(read_salt(ensure_redact_salt(workspace))) == 32


def test_an_empty_salt_an_older_crash_left_is_made_again_and_any_other_is_kept(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.root.mkdir()
    for empty in ("", "\n"):
        workspace.redact_salt_file.write_text(empty)
        assert len(read_salt(ensure_redact_salt(workspace))) == 32
    workspace.redact_salt_file.write_text("not-hex\n")  # not empty: tokens may have been made; never replaced
    ensure_redact_salt(workspace)
    assert workspace.redact_salt_file.read_text() == "not-hex\n"
    with pytest.raises(ConfigError, match="not a redaction salt"):
        read_salt(workspace.redact_salt_file)


def test_a_salt_it_cannot_make_is_an_error_naming_the_file(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.root.mkdir()
    tmp = workspace.root / f".redact.salt.{os.getpid()}.tmp"
    tmp.mkdir()  # where the salt is written first (as root, the one failure a mode cannot cause)
    with pytest.raises(ConfigError, match=f"^{workspace.redact_salt_file}: cannot write the redaction salt"):
        ensure_redact_salt(workspace)
    assert not workspace.redact_salt_file.exists()
    tmp.rmdir()
    lock = workspace.root / "redact.salt.lock"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(ConfigError, match=f"^{lock}: cannot create the redaction salt: Is a directory"):
        ensure_redact_salt(workspace)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="redact.salt: cannot read the redaction salt: Not a directory"):
        ensure_redact_salt(Workspace(tmp_path / "file"))


def _make_salt(app_dir: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    start.wait(30)
    out.put(ensure_redact_salt(Workspace(Path(app_dir))).read_text())


@pytest.mark.parametrize("empty_before", [False, True])
def test_processes_racing_to_make_the_salt_all_get_the_same_one(tmp_path: Path, empty_before: bool) -> None:
    workspace = Workspace(tmp_path)
    if empty_before:
        workspace.root.mkdir()
        workspace.redact_salt_file.write_text("")
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    makers = [context.Process(target=_make_salt, args=(str(tmp_path), start, out)) for _ in range(4)]
    for maker in makers:
        maker.start()
    start.set()
    salts = {out.get(timeout=60) for _ in makers}
    for maker in makers:
        maker.join(60)
        assert maker.exitcode == 0
    assert salts == {workspace.redact_salt_file.read_text()} and len(read_salt(workspace.redact_salt_file)) == 32
