"""The encrypted secret store: values at rest, wrong keys, damaged files, key rotation that survives a crash,
and the order a replica's secrets are looked up in."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lichen.errors import ConfigError
from lichen.runtime import secret_stores, workspaces
from lichen.runtime.secret_stores import KEY_ENV, NEW_KEY_ENV, EncryptedSecretStore, key_id
from lichen.runtime.workspaces import Workspace, resolve_secrets
from lichen.testing import MemorySecretStore

VALUE = "s3cr3t-Ünïcode-value-42"


def store(tmp_path: Path, **environ: str) -> EncryptedSecretStore:
    return EncryptedSecretStore(tmp_path / ".lichen", environ)


def test_a_value_is_encrypted_at_rest_and_the_key_is_0600(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    secrets.set("API_TOKEN", VALUE, 1000.0)
    raw = secrets.path.read_bytes()
    assert VALUE.encode() not in raw and b"s3cr3t" not in raw
    document = json.loads(raw)
    assert document["format"] == "lichen-secrets/1" and set(document["secrets"]) == {"API_TOKEN"}
    assert stat.S_IMODE(secrets.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.path.stat().st_mode) == 0o600
    assert document["key_id"] == key_id(secrets.key_path.read_bytes().strip())
    assert store(tmp_path).values(["API_TOKEN", "OTHER"]) == {"API_TOKEN": VALUE}
    assert store(tmp_path).entries() == {"API_TOKEN": 1000.0}


def test_the_environment_key_takes_precedence_and_no_key_file_is_made(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    store(tmp_path, **{KEY_ENV: key}).set("A", "alpha", 1.0)
    assert not (tmp_path / ".lichen" / "secrets.key").exists()
    assert store(tmp_path, **{KEY_ENV: key}).values(["A"]) == {"A": "alpha"}
    with pytest.raises(ConfigError, match="no key for"):
        store(tmp_path).values(["A"])  # and the store never makes a new key over existing secrets
    assert not (tmp_path / ".lichen" / "secrets.key").exists()


def test_a_wrong_key_is_named_and_changes_nothing(tmp_path: Path) -> None:
    store(tmp_path).set("A", "alpha", 1.0)
    before = (tmp_path / ".lichen" / "secrets.enc").read_bytes()
    wrong = store(tmp_path, **{KEY_ENV: Fernet.generate_key().decode()})
    for attempt in (lambda: wrong.values(["A"]), lambda: wrong.set("B", "beta", 2.0), lambda: wrong.remove("A"),
                    wrong.rotate_key):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert str(caught.value).startswith(str(wrong.path)) and "key id" in str(caught.value)
    assert (tmp_path / ".lichen" / "secrets.enc").read_bytes() == before
    with pytest.raises(ConfigError, match="not a Fernet key"):
        store(tmp_path, **{KEY_ENV: "not-a-key"}).values(["A"])


def test_a_damaged_file_or_a_moved_value_is_an_error_naming_the_file(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    secrets.set_many({"A": "alpha", "B": "beta"}, 1.0)
    document = json.loads(secrets.path.read_text())
    document["secrets"]["A"]["value"], document["secrets"]["B"]["value"] = (document["secrets"]["B"]["value"],
                                                                            document["secrets"]["A"]["value"])
    secrets.path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=r"value of A does not decrypt .* altered"):
        secrets.values(["A"])
    secrets.path.write_text('{"format": "lichen-secrets/1", "secrets": ')
    with pytest.raises(ConfigError, match=f"{secrets.path}: not a Lichen secret store"):
        secrets.entries()
    with pytest.raises(ConfigError, match="damaged"):
        secrets.set("C", "gamma", 2.0)
    assert secrets.path.read_text() == '{"format": "lichen-secrets/1", "secrets": '  # nothing overwritten


def test_rotation_re_encrypts_everything_under_a_new_key(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    secrets.set_many({"A": "alpha", "B": "beta"}, 1.0)
    old_key = secrets.key_path.read_bytes()
    old_id, new_id = secrets.rotate_key()
    assert old_id == key_id(old_key.strip()) and new_id == key_id(secrets.key_path.read_bytes().strip())
    assert old_id != new_id and not secrets.pending_key_path.exists()
    assert store(tmp_path).values(["A", "B"]) == {"A": "alpha", "B": "beta"}
    with pytest.raises(ConfigError, match="key id"):
        store(tmp_path, **{KEY_ENV: old_key.decode().strip()}).values(["A"])  # the old key opens nothing now


class PowerCut(BaseException):
    """The process stops here: nothing after it runs, no handler sees it (as with a kill or a power cut)."""


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_between_the_renames_leaves_a_usable_store(tmp_path: Path, monkeypatch, crash_at: int) -> None:
    """Rename 1 puts the new document in place, rename 2 the new key: a crash before either leaves the old pair;
    a crash between them leaves the new document and its key in secrets.key.next, which the next read adopts."""
    secrets = store(tmp_path)
    secrets.set_many({"A": "alpha", "B": "beta"}, 1.0)
    real_replace, renames = os.replace, []

    def replace(src, dst) -> None:
        if Path(dst).name in ("secrets.enc", "secrets.key"):
            renames.append(Path(dst).name)
            if len(renames) == crash_at:
                raise PowerCut("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(secret_stores.os, "replace", replace)
    with pytest.raises(PowerCut):
        secrets.rotate_key()
    monkeypatch.setattr(secret_stores.os, "replace", real_replace)
    assert renames == ["secrets.enc", "secrets.key"][:crash_at]
    assert store(tmp_path).values(["A", "B"]) == {"A": "alpha", "B": "beta"}
    document = json.loads(secrets.path.read_text())
    assert document["key_id"] == key_id(secrets.key_path.read_bytes().strip())
    assert not secrets.pending_key_path.exists() or crash_at == 1  # adopted, or stale and harmless
    store(tmp_path).rotate_key()  # and the next rotation works from there
    assert store(tmp_path).values(["A"]) == {"A": "alpha"}


def test_rotating_an_environment_key_takes_the_new_one_from_the_environment(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    store(tmp_path, **{KEY_ENV: old}).set("A", "alpha", 1.0)
    with pytest.raises(ConfigError, match=NEW_KEY_ENV):
        store(tmp_path, **{KEY_ENV: old}).rotate_key()
    store(tmp_path, **{KEY_ENV: old, NEW_KEY_ENV: new}).rotate_key()
    assert store(tmp_path, **{KEY_ENV: new}).values(["A"]) == {"A": "alpha"}
    assert not (tmp_path / ".lichen" / "secrets.key").exists()


def _set_many(root: str, start: int) -> None:
    secrets = EncryptedSecretStore(Path(root), {})
    for i in range(start, start + 10):
        secrets.set(f"S{i}", f"value-{i}", float(i))


def test_concurrent_writers_lose_no_value(tmp_path: Path) -> None:
    store(tmp_path).set("S_FIRST", "v", 0.0)  # the key exists before the writers race
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_set_many, args=(str(tmp_path / ".lichen"), start)) for start in (0, 100, 200)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert len(store(tmp_path).entries()) == 31


def test_resolution_order_is_environment_then_store_then_the_legacy_file(tmp_path: Path, caplog) -> None:
    legacy = tmp_path / "secrets.env"
    legacy.write_text("A=from-file\nB=from-file\nC=from-file\n")
    memory = MemorySecretStore({"B": "from-store", "C": "from-store"})
    workspaces._warned_legacy.clear()
    with caplog.at_level(logging.WARNING, logger="lichen.secrets"):
        got = resolve_secrets(["A", "B", "C", "D"], {"D": "from-env", "C": "from-env"}, "services.web.secrets",
                              store=memory, legacy_file=legacy)
        resolve_secrets(["A"], {}, "jobs.x.secrets", store=memory, legacy_file=legacy)
    assert got == {"A": "from-file", "B": "from-store", "C": "from-env", "D": "from-env"}
    assert memory.lookups[0] == ("A", "B")  # the store is asked only for what the environment lacks
    warnings = [r for r in caplog.records if "plaintext_secrets_file" in r.getMessage()]
    assert len(warnings) == 1 and "lichen secrets import" in warnings[0].getMessage()  # once per file
    assert resolve_secrets(["D"], {"D": "x"}, "o", store=MemorySecretStore()) == {"D": "x"}
    with pytest.raises(ConfigError, match=r"services\.web\.secrets: E not set; store it with `lichen secrets set"):
        resolve_secrets(["E"], {}, "services.web.secrets", store=memory, legacy_file=legacy)


def test_read_secrets_uses_the_workspace_store(tmp_path: Path, monkeypatch) -> None:
    workspace = Workspace(tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    workspace.secret_store({}).set("API_TOKEN", VALUE, 1.0)
    monkeypatch.delenv("API_TOKEN", raising=False)
    assert workspaces.read_secrets(["API_TOKEN"], workspace, "web") == {"API_TOKEN": VALUE}


def _stopped_between_the_renames(tmp_path: Path, monkeypatch) -> EncryptedSecretStore:
    """A store whose rotation stopped after its commit: the document names the key in secrets.key.next."""
    secrets = store(tmp_path)
    secrets.set_many({"A": "alpha", "B": "beta"}, 1.0)
    real_replace = os.replace

    def replace(src, dst) -> None:
        if Path(dst).name == "secrets.key":
            raise PowerCut("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(secret_stores.os, "replace", replace)
    with pytest.raises(PowerCut):
        secrets.rotate_key()
    monkeypatch.setattr(secret_stores.os, "replace", real_replace)
    assert secrets.pending_key_path.exists()
    return secrets


def test_two_readers_finishing_one_rotation_both_read_the_values(tmp_path: Path, monkeypatch) -> None:
    """Readers share the lock, so two may both find the pending key: the one that finds it gone once it looks
    (the other renamed it over secrets.key meanwhile) reads the key file, where the key now is."""
    secrets = _stopped_between_the_renames(tmp_path, monkeypatch)
    pending = secrets.pending_key_path
    real_read_bytes = Path.read_bytes
    other: list[dict[str, str]] = []
    raced: list[bool] = []

    def read_bytes(path: Path) -> bytes:
        if path == pending and not raced:  # the other reader finishes the rotation first, under the same lock
            raced.append(True)
            other.append(store(tmp_path).values(["A"]))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert store(tmp_path).values(["A", "B"]) == {"A": "alpha", "B": "beta"}
    assert other == [{"A": "alpha"}] and not pending.exists()
    monkeypatch.setattr(Path, "read_bytes", real_read_bytes)
    assert json.loads(secrets.path.read_text())["key_id"] == key_id(secrets.key_path.read_bytes().strip())


def test_a_lock_file_it_cannot_open_is_an_error_naming_it(tmp_path: Path) -> None:
    secrets = store(tmp_path)
    secrets.set("A", "alpha", 1.0)
    lock = tmp_path / ".lichen" / "secrets.lock"
    lock.unlink()
    lock.mkdir()  # not a file: no process can open it for a lock
    for attempt in (lambda: secrets.values(["A"]), lambda: secrets.set("B", "beta", 2.0), secrets.rotate_key):
        with pytest.raises(ConfigError, match=f"^{lock}: cannot open the secret store's lock file: Is a directory"):
            attempt()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="lock file: File exists"):  # the store's directory is a file
        EncryptedSecretStore(tmp_path / "file", {}).set("A", "alpha", 1.0)


def test_a_pending_key_or_a_store_it_cannot_read_or_write_is_an_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    secrets = _stopped_between_the_renames(tmp_path, monkeypatch)
    pending = secrets.pending_key_path
    saved = pending.read_bytes()
    pending.unlink()
    pending.mkdir()  # unreadable as a file (EISDIR; as root, the one failure a mode cannot cause)
    with pytest.raises(ConfigError, match=f"^{pending}: cannot read the secrets key: Is a directory"):
        secrets.values(["A"])
    pending.rmdir()
    pending.write_bytes(saved)
    tmp = secrets.path.with_name(f".secrets.enc.{os.getpid()}.tmp")
    tmp.mkdir()  # where the next write's temporary file goes
    before = secrets.path.read_bytes()
    with pytest.raises(ConfigError, match=f"^{secrets.path}: cannot write the secret store: Is a directory"):
        secrets.set("C", "gamma", 2.0)
    assert secrets.path.read_bytes() == before
    tmp.rmdir()
    assert store(tmp_path).values(["A"]) == {"A": "alpha"}  # and the rotation finished by that read


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_lock_file_it_may_only_read_still_serves_readers(tmp_path: Path, monkeypatch, code: int) -> None:
    """A read-only lock file or file system, with the system's answer given by a stand-in for os.open (CI runs
    as root, whose opens never fail on modes, and every test runs there)."""
    secrets = store(tmp_path)
    secrets.set("A", "alpha", 1.0)
    lock, real_open = tmp_path / ".lichen" / "secrets.lock", os.open

    def read_only_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if Path(path) == lock and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(secret_stores.os, "open", read_only_open)
    assert store(tmp_path).values(["A"]) == {"A": "alpha"}
    with pytest.raises(ConfigError, match=f"^{lock}: cannot open the secret store's lock file: {os.strerror(code)}"):
        store(tmp_path).set("B", "beta", 2.0)
