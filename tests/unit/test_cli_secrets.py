"""``lichen secrets``: set, list, rm, import and rotate-key through the real CLI; values never printed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
VALUE = "pl4nted-secret-value-7f3a"
SPEC = """app: shop
services:
  web:
    entrypoint: app:Web
    secrets: [API_TOKEN]
jobs:
  train:
    entrypoint: app:train
    secrets: [API_TOKEN, DB_PASSWORD]
"""


def lichen(app: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LICHEN_SECRETS")}
    return subprocess.run([*LICHEN, "secrets", *args, "-C", str(app)], input=stdin, capture_output=True, text=True,
                          timeout=60, env={**environ, **env, "COLUMNS": "200"})


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "lichen.yaml").write_text(SPEC)
    return tmp_path


def test_set_from_stdin_then_list_shows_names_times_and_declarations_never_values(app: Path) -> None:
    done = lichen(app, "set", "API_TOKEN", stdin=VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert VALUE not in done.stdout + done.stderr
    assert stat.S_IMODE((app / ".lichen" / "secrets.key").stat().st_mode) == 0o600
    listed = lichen(app, "list", "--json")
    assert listed.returncode == 0 and VALUE not in listed.stdout
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["API_TOKEN"]["source"] == "store" and rows["API_TOKEN"]["set_at"] > 0
    assert rows["API_TOKEN"]["declared_by"] == ["services.web", "jobs.train"]
    assert rows["DB_PASSWORD"]["source"] == "missing" and rows["DB_PASSWORD"]["set_at"] is None
    table = lichen(app, "list")
    assert "API_TOKEN" in table.stdout and "services.web, jobs.train" in table.stdout and VALUE not in table.stdout
    audit = (app / ".lichen" / "audit.log").read_text()
    assert "secrets.set" in audit and VALUE not in audit


def test_value_file_and_the_value_flag_with_its_warning(app: Path) -> None:
    (app / "token.txt").write_text(VALUE + "\n")
    assert lichen(app, "set", "API_TOKEN", "--value-file", str(app / "token.txt")).returncode == 0
    flagged = lichen(app, "set", "DB_PASSWORD", "--value", "pw-12345")
    assert flagged.returncode == 0 and "shell history" in flagged.stderr
    undeclared = lichen(app, "set", "NOBODY_USES", stdin="x-value")
    assert undeclared.returncode == 0 and "declares NOBODY_USES" in undeclared.stderr
    from lichen.runtime.secret_stores import EncryptedSecretStore

    assert EncryptedSecretStore(app / ".lichen", {}).values(["API_TOKEN", "DB_PASSWORD"]) == {
        "API_TOKEN": VALUE, "DB_PASSWORD": "pw-12345"}


def test_bad_input_is_one_line_naming_what_is_wrong(app: Path) -> None:
    empty = lichen(app, "set", "API_TOKEN", stdin="")
    assert empty.returncode == 2 and "value of API_TOKEN: is empty" in empty.stderr
    bad_name = lichen(app, "set", "9LIVES", stdin="x")
    assert bad_name.returncode == 2 and "NAME: must be an environment variable name" in bad_name.stderr
    assert lichen(app, "set", "API_TOKEN", stdin=VALUE).returncode == 0
    wrong = lichen(app, "list", "--json", LICHEN_SECRETS_KEY=Fernet.generate_key().decode())
    assert wrong.returncode == 0  # names and times need no key
    wrong = lichen(app, "rm", "API_TOKEN", LICHEN_SECRETS_KEY=Fernet.generate_key().decode())
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert f"{app / '.lichen' / 'secrets.enc'}: was encrypted with key id" in wrong.stderr.replace("\n", "")
    missing = lichen(app, "rm", "NOT_THERE")
    assert missing.returncode == 2 and "NOT_THERE is not in the store" in missing.stderr


def test_import_moves_the_plaintext_file_and_rotate_key_keeps_every_value(app: Path) -> None:
    legacy = app / ".lichen" / "secrets.env"
    legacy.parent.mkdir()
    legacy.write_text(f"# old\nexport API_TOKEN='{VALUE}'\nDB_PASSWORD=pw-1\n")
    imported = lichen(app, "import", str(legacy), "--remove-file", "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == ["API_TOKEN", "DB_PASSWORD"] and not legacy.exists()
    key_before = (app / ".lichen" / "secrets.key").read_bytes()
    rotated = lichen(app, "rotate-key", "--json")
    assert rotated.returncode == 0, rotated.stderr
    ids = json.loads(rotated.stdout)
    assert ids["old_key_id"] != ids["new_key_id"] and ids["secrets"] == 2
    assert (app / ".lichen" / "secrets.key").read_bytes() != key_before
    from lichen.runtime.secret_stores import EncryptedSecretStore

    assert EncryptedSecretStore(app / ".lichen", {}).values(["API_TOKEN"]) == {"API_TOKEN": VALUE}
    removed = lichen(app, "rm", "DB_PASSWORD", "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"name": "DB_PASSWORD", "removed": True}
