"""An app's secrets, encrypted at rest: ``.lichen/secrets.enc`` and its key.

The file is one JSON document; each value is its own Fernet token
(AES-128-CBC + HMAC-SHA256, from ``cryptography``) of
``{"name": NAME, "value": VALUE}``, so a value moved under another name does
not decrypt as that name, and names and set-at times can be listed without
the key::

    {"format": "lichen-secrets/1", "key_id": "3f9a1c2e0b7d",
     "secrets": {"API_TOKEN": {"set_at": 1767225600.0, "value": "gAAAAAB..."}}}

``key_id`` is the first 12 hex digits of SHA-256 of the key: a wrong key is
named as such before anything is decrypted. The key is
``LICHEN_SECRETS_KEY`` when set, else ``.lichen/secrets.key`` (mode 0600,
created by the first ``set`` when there is neither a key nor a secret).
Every write replaces the file atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory) under an exclusive lock
(``.lichen/secrets.lock``), so two ``lichen secrets set`` never lose one's
value. A wrong key, a damaged file, or a file or directory that cannot be
read, written or locked (a read-only ``.lichen``) is a
:class:`~lichen.errors.ConfigError` naming the file, and nothing is written.

Key rotation (:meth:`EncryptedSecretStore.rotate_key`) with a key file: the
new key is written to ``secrets.key.next``, every value is re-encrypted
with it into a temporary file, then two renames: first the new document
over ``secrets.enc``, then ``secrets.key.next`` over ``secrets.key``. A
crash before the first rename leaves the old key and the old document (a
stale ``secrets.key.next`` that is ignored and replaced by the next
rotation); a crash between the two leaves the new document with the new key
still in ``secrets.key.next``, which the next use of the store recognises by
its key id and finishes renaming (two readers may both try: the one that
finds the file gone reads the key file the other renamed it to). With
``LICHEN_SECRETS_KEY`` the new key is
``LICHEN_SECRETS_NEW_KEY`` (the store cannot change the environment); one
rename, and the document's key id says which of the two keys opens it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

from lichen.errors import ConfigError

KEY_ENV = "LICHEN_SECRETS_KEY"
NEW_KEY_ENV = "LICHEN_SECRETS_NEW_KEY"
FORMAT = "lichen-secrets/1"
STORE_FILE = "secrets.enc"
KEY_FILE = "secrets.key"
PENDING_KEY_FILE = "secrets.key.next"
LOCK_FILE = "secrets.lock"
STORE_KEYS = frozenset({KEY_ENV, NEW_KEY_ENV})
"""the store's key variables: never inherited by a replica, job or supervised process"""

__all__ = ["FORMAT", "KEY_ENV", "NEW_KEY_ENV", "STORE_KEYS", "EncryptedSecretStore", "SecretStore", "key_id"]


class SecretStore(Protocol):
    """Where ``lichen secrets`` keeps values and where a replica's or job's secrets are looked up."""

    def entries(self) -> dict[str, float]:
        """Each stored name and when it was set (wall seconds); no value is decrypted."""

    def values(self, names: Iterable[str]) -> dict[str, str]:
        """The values of those of ``names`` the store holds."""

    def set(self, name: str, value: str, now: float) -> None: ...

    def remove(self, name: str) -> bool:
        """False when the store did not hold ``name``."""


def key_id(key: bytes) -> str:
    """What names a key in the document and in errors (never the key itself)."""
    return hashlib.sha256(key).hexdigest()[:12]


def _fernet(key: bytes, where: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ConfigError("not a Fernet key (32 url-safe base64-encoded bytes, as "
                          "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
                          "prints)", where=where) from None


def write_private(path: Path, data: bytes, what: str) -> None:
    """Replace ``path`` with ``data`` (mode 0600): temporary file, fsync, rename, fsync of the directory.

    A file or directory that cannot be written is a ConfigError naming ``path`` (``what`` it holds).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the {what}: {exc.strerror or exc} (nothing was changed)",
                          where=str(path)) from None


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EncryptedSecretStore:
    """The Fernet store in an app's ``.lichen/`` (``root``); the key from ``environ`` or the key file."""

    def __init__(self, root: Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.path = root / STORE_FILE
        self.key_path = root / KEY_FILE
        self.pending_key_path = root / PENDING_KEY_FILE
        self.environ = os.environ if environ is None else environ

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return self.path.exists()

    def entries(self) -> dict[str, float]:
        return {name: float(entry["set_at"]) for name, entry in self._document()["secrets"].items()}

    def values(self, names: Iterable[str]) -> dict[str, str]:
        wanted = list(names)
        if not wanted or not self.path.exists():
            return {}
        with self._locked(fcntl.LOCK_SH):  # not halfway through a rotation's two renames
            document = self._document()
            held = [name for name in wanted if name in document["secrets"]]
            if not held:
                return {}
            fernet, _ = self._key(document)
            return {name: self._decrypt(fernet, document, name) for name in held}

    def key_source(self) -> str:
        """Where the key comes from, for messages: the variable or the key file."""
        return f"env {KEY_ENV}" if self.environ.get(KEY_ENV) else str(self.key_path)

    # ------------------------------------------------------------------ writing
    def set(self, name: str, value: str, now: float) -> None:
        self.set_many({name: value}, now)

    def set_many(self, values: Mapping[str, str], now: float) -> None:
        """Store every value of ``values`` in one write (a new key file first when the store is new)."""
        with self._locked():
            document = self._document()
            fernet, current = self._key(document, create=True)
            document["key_id"] = current
            for name, value in values.items():
                document["secrets"][name] = {"set_at": now, "value": self._encrypt(fernet, name, value)}
            self._write(document)

    def remove(self, name: str) -> bool:
        with self._locked():
            document = self._document()
            if name not in document["secrets"]:
                return False
            self._key(document)  # a wrong key changes nothing, not even a removal
            del document["secrets"][name]
            self._write(document)
            return True

    def rotate_key(self) -> tuple[str, str]:
        """Re-encrypt every value with a new key (see the module's docstring); returns (old id, new id)."""
        with self._locked():
            document = self._document()
            if not document["secrets"]:
                raise ConfigError("holds no secret: there is nothing to re-encrypt (the first `lichen secrets set` "
                                  "creates the key)", where=str(self.path))
            old, old_id = self._key(document)
            plain = {name: self._decrypt(old, document, name) for name in document["secrets"]}
            from_env = bool(self.environ.get(KEY_ENV))
            if from_env:
                new_key = self.environ.get(NEW_KEY_ENV, "").strip().encode()
                if not new_key:
                    raise ConfigError(f"the key comes from {KEY_ENV}, which `lichen secrets` cannot change: put the "
                                      f"new key in {NEW_KEY_ENV} for this command, then make it {KEY_ENV}",
                                      where=f"env {NEW_KEY_ENV}")
                new = _fernet(new_key, f"env {NEW_KEY_ENV}")
            else:
                new_key = Fernet.generate_key()
                new = Fernet(new_key)
            new_id = key_id(new_key)
            if new_id == old_id:
                raise ConfigError(f"is the key in use already (key id {new_id})", where=f"env {NEW_KEY_ENV}")
            rotated = {**document, "key_id": new_id,
                       "secrets": {name: {**entry, "value": self._encrypt(new, name, plain[name])}
                                   for name, entry in document["secrets"].items()}}
            if not from_env:
                write_private(self.pending_key_path, new_key + b"\n", "new secrets key")
            self._write(rotated)  # commit point: the document now names the new key
            if not from_env:
                try:
                    os.replace(self.pending_key_path, self.key_path)
                    _sync_dir(self.root)
                except OSError as exc:  # the next use of the store finishes it (the document names the new key)
                    raise ConfigError(f"re-encrypted every value, but cannot rename the new key over "
                                      f"{self.key_path.name}: {exc.strerror or exc}; the next use of the store "
                                      f"finishes it", where=str(self.pending_key_path)) from None
            return old_id, new_id

    # ------------------------------------------------------------------ internals
    def _document(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": FORMAT, "key_id": "", "secrets": {}}
        except OSError as exc:
            raise ConfigError(f"cannot read the secret store: {exc.strerror}", where=str(self.path)) from None
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not (isinstance(document, dict) and document.get("format") == FORMAT
                and isinstance(document.get("key_id"), str) and isinstance(document.get("secrets"), dict)
                and all(isinstance(e, dict) and isinstance(e.get("value"), str)
                        and isinstance(e.get("set_at"), (int, float)) and math.isfinite(e["set_at"])
                        for e in document["secrets"].values())):
            raise ConfigError(f"not a Lichen secret store ({FORMAT}): the file is damaged; restore it from a "
                              f"backup (nothing was changed)", where=str(self.path))
        return document

    def _key(self, document: dict[str, Any], *, create: bool = False) -> tuple[Fernet, str]:
        """The Fernet and key id that open ``document``; a wrong or missing key is a ConfigError."""
        wanted = document["key_id"] if document["secrets"] else ""
        env_key = self.environ.get(KEY_ENV, "").strip()
        if env_key:
            key, where = env_key.encode(), f"env {KEY_ENV}"
        else:
            key, where = self._file_key(wanted, create)
        fernet = _fernet(key, where)
        found = key_id(key)
        if wanted and found != wanted:
            raise ConfigError(f"was encrypted with key id {wanted}, but the key from {where} has id {found}: give "
                              f"the right key (nothing was changed)", where=str(self.path))
        return fernet, found

    def _file_key(self, wanted: str, create: bool) -> tuple[bytes, str]:
        path = self.key_path
        pending = self._read_key(self.pending_key_path) if wanted else None
        if pending is not None and key_id(pending) == wanted:  # a rotation stopped between its two renames
            with contextlib.suppress(OSError):  # best effort: another reader may finish it first, or none can
                os.replace(self.pending_key_path, path)
                _sync_dir(self.root)
            return pending, str(path)
        # No pending key (or gone: another reader renamed it over the key file between the two reads, which
        # is then the key the document names), or a stale one from a rotation that stopped before its commit.
        key = self._read_key(path)
        if key is None:
            if wanted or not create:
                raise ConfigError(f"no key for {self.path}: restore {path} or set {KEY_ENV} (the secrets cannot be "
                                  f"read without it; nothing was changed)", where=str(path))
            key = Fernet.generate_key()
            write_private(path, key + b"\n", "secrets key")
            return key, str(path)
        try:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError as exc:
            raise ConfigError(f"the secrets key is readable by others and cannot be made private (mode 0600): "
                              f"{exc.strerror or exc}", where=str(path)) from None
        return key, str(path)

    @staticmethod
    def _read_key(path: Path) -> bytes | None:
        """The key in ``path``, or None when there is no such file; any other failure is a ConfigError."""
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the secrets key: {exc.strerror or exc}", where=str(path)) from None

    def _encrypt(self, fernet: Fernet, name: str, value: str) -> str:
        return fernet.encrypt(json.dumps({"name": name, "value": value}).encode()).decode()

    def _decrypt(self, fernet: Fernet, document: dict[str, Any], name: str) -> str:
        try:
            plain = json.loads(fernet.decrypt(document["secrets"][name]["value"].encode()))
        except (InvalidToken, ValueError):
            plain = None
        if not isinstance(plain, dict) or plain.get("name") != name or not isinstance(plain.get("value"), str):
            raise ConfigError(f"the value of {name} does not decrypt with key id {document['key_id']}: the file was "
                              f"altered; restore it from a backup or set {name} again", where=str(self.path))
        return str(plain["value"])

    def _write(self, document: dict[str, Any]) -> None:
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        write_private(self.path, text.encode(), "secret store")

    @contextlib.contextmanager
    def _locked(self, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        """Exclusive for a write; shared for a read, which then never sees a rotation halfway.

        A lock file (or ``.lichen``) that cannot be created or opened is a ConfigError naming it; a reader may
        lock a lock file it can only read (a read-only ``.lichen`` another user set up).
        """
        lock = self.root / LOCK_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if mode != fcntl.LOCK_SH or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                fd = os.open(lock, os.O_RDONLY)  # flock needs no write access
        except OSError as exc:
            raise ConfigError(f"cannot open the secret store's lock file: {exc.strerror or exc} (nothing was "
                              f"changed)", where=str(lock)) from None
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)
