"""``lichen certs dev`` through the real CLI: the CA folder it makes is private, one it is given is left alone,
and a folder it cannot use is one line naming it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


def certs_dev(app: Path, ca_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICHEN, "certs", "dev", str(app), "--ca-dir", str(ca_dir), "--json"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env, "COLUMNS": "200"})


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_ca_folder_it_makes_is_private_and_one_it_is_given_keeps_its_mode(tmp_path: Path) -> None:
    made = certs_dev(tmp_path, tmp_path / "new" / "ca")
    assert made.returncode == 0, made.stderr
    assert mode(tmp_path / "new" / "ca") == 0o700 and mode(tmp_path / "new" / "ca" / "ca.key") == 0o600
    shared = tmp_path / "shared"  # say the home directory, or /tmp: not the CLI's to change
    shared.mkdir()
    os.chmod(shared, 0o1777)
    given = certs_dev(tmp_path, shared)
    assert given.returncode == 0, given.stderr
    assert mode(shared) == 0o1777  # left as it was
    assert mode(shared / "ca.key") == 0o600 and json.loads(given.stdout)["ca_created"] is True
    again = certs_dev(tmp_path, shared, LICHEN_CA_DIR=str(tmp_path / "unused"))  # --ca-dir wins; reused
    assert again.returncode == 0 and json.loads(again.stdout)["ca_created"] is False and mode(shared) == 0o1777


def test_a_ca_folder_it_cannot_use_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for ca_dir in (tmp_path / "a-file", tmp_path / "a-file" / "ca"):
        result = certs_dev(tmp_path, ca_dir)
        assert result.returncode == 2, result.stderr
        assert str(ca_dir) in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
