"""Where an app's control-plane files live, and the facts the controller reads from disk.

``APP_DIR/.lichen/`` holds ``token`` (mode 0600), ``controller.json``
(pid, API port), ``controller.lock``, ``logs/<replica>.log``, the
encrypted secret store ``secrets.enc`` with its key ``secrets.key``
(:mod:`lichen.runtime.secret_stores`), the legacy plaintext ``secrets.env``
and the redaction salt ``redact.salt`` (:mod:`lichen.redacting`), made
under ``redact.salt.lock``. The state database path comes from
``state.url`` in ``lichen.yaml``, relative to the app dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets as token_source
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from lichen.control.plans import Machine
from lichen.errors import ConfigError
from lichen.logs import get_logger
from lichen.runtime.secret_stores import EncryptedSecretStore, SecretStore, write_private
from lichen.spec.documents import LocatingSafeLoader

_SKIP_DIRS = {".lichen", ".git", ".venv", "venv", "__pycache__", "node_modules", ".pytest_cache", ".mypy_cache"}
_CODE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".toml", ".txt", ".cfg"}
_MAX_CODE_FILES = 5000
_MAX_HASHED_BYTES = 1 << 20
"""files larger than this (a vocabulary, a JSON data set) are digested by size and mtime, not read"""


@dataclass(frozen=True)
class Workspace:
    app_dir: Path

    @property
    def spec_path(self) -> Path:
        return self.app_dir / "lichen.yaml"

    @property
    def root(self) -> Path:
        return self.app_dir / ".lichen"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    @property
    def controller_file(self) -> Path:
        return self.root / "controller.json"

    @property
    def pid_file(self) -> Path:
        return self.root / "controller.pid"

    @property
    def lock_file(self) -> Path:
        return self.root / "controller.lock"

    @property
    def secrets_file(self) -> Path:
        """the legacy plaintext secrets (``NAME=VALUE`` lines), read after the encrypted store"""
        return self.root / "secrets.env"

    def secret_store(self, environ: Mapping[str, str] | None = None) -> EncryptedSecretStore:
        """The app's encrypted secret store (its key from ``environ``'s ``LICHEN_SECRETS_KEY``, else the key file)."""
        return EncryptedSecretStore(self.root, environ)

    @property
    def redact_salt_file(self) -> Path:
        return self.root / "redact.salt"

    def log_path(self, replica: str) -> Path:
        return self.logs / f"{replica}.log"


def workspace_for(path: str | Path | None) -> Workspace:
    """The workspace of ``path`` (a lichen.yaml, or a directory holding one; default: cwd)."""
    target = Path(path or ".").resolve()
    if target.is_dir():
        return Workspace(target)
    if not target.exists():
        raise ConfigError(f"{path}: no such file or directory (expected an app directory or its lichen.yaml)")
    return Workspace(target.parent)


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_token(workspace: Workspace) -> str:
    """The API bearer token, generated on first run and stored with mode 0600."""
    path = workspace.token_path
    if path.exists():
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return token
    token = token_source.token_urlsafe(32)
    atomic_write(path, token + "\n", mode=0o600)
    return token


def ensure_redact_salt(workspace: Workspace) -> Path:
    """The app's redaction salt file (32 random bytes as hex, mode 0600), created once; its path.

    Made whole in a temporary file, then renamed into place, under an exclusive lock
    (``.lichen/redact.salt.lock``): a crash leaves no salt file, or a whole one, and of two processes at once
    the second keeps the first's. A salt file that is there is never replaced (tokens were made from it), except
    an empty one, which only a crash of an older Lichen between creating and writing it leaves: no token was
    made from that. A directory or file it cannot write is a ConfigError naming it.
    """
    path = workspace.redact_salt_file
    if _has_salt(path):
        return path  # the common case: no lock, no write
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create the redaction salt: {exc.strerror or exc}", where=str(lock)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _has_salt(path):  # still none (or empty) now that no other process is making one
            _write_salt(path, token_source.token_hex(32) + "\n")
    finally:
        os.close(fd)
    return path


def _has_salt(path: Path) -> bool:
    """Whether ``path`` holds anything (a salt, or something :func:`lichen.redacting.read_salt` names as bad)."""
    try:
        return bool(path.read_bytes().strip())
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot read the redaction salt: {exc.strerror or exc}", where=str(path)) from None


def _write_salt(path: Path, text: str) -> None:
    write_private(path, text.encode(), "redaction salt")


def read_token(workspace: Workspace) -> str:
    try:
        return workspace.token_path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"no API token at {workspace.token_path}; start the controller with 'lichen up'") from None


def read_controller_info(workspace: Workspace) -> dict | None:
    try:
        return json.loads(workspace.controller_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def code_digest(app_dir: Path, exclude: Iterable[str | Path] = ()) -> str:
    """One digest of every code file of the app (:func:`code_files`).

    Revisions digest each service's own files instead
    (:func:`lichen.runtime.digesting.service_digests`); this whole-app digest
    is what every revision used before, kept as the comparison in
    ``bench/code_digests.py``.
    """
    return files_digest(code_files(app_dir, exclude))


def code_files(app_dir: Path, exclude: Iterable[str | Path] = ()) -> dict[str, bytes]:
    """The app's code and config files (relative POSIX path -> content) that a revision may digest.

    ``lichen.yaml`` itself is left out: the fields of it that change a replica
    are hashed into each service's revision already, so editing ``replicas``,
    ``autoscale``, ``routes`` or another service scales or reroutes without
    rolling every service (as a Kubernetes Deployment's ``replicas`` does not).
    So are Prometheus rule files, which the controller reloads itself and no
    replica reads: the files in ``exclude`` (relative to ``app_dir``; the
    controller passes those ``observability.rules`` names, even one that is
    broken) and any YAML file shaped like one (a top-level ``groups:`` list of
    groups with ``rules``), so listing an existing file as a rule file, or no
    longer listing it, rolls nothing. Files over 1 MiB other than ``.py``
    modules count by size and modification time (that text stands for their
    content), so a large data file in the app dir does not make every
    ``lichen up`` read it.
    """
    found: dict[str, bytes] = {}
    skipped = {app_dir / "lichen.yaml", *(Path(os.path.normpath(app_dir / p)) for p in exclude)}
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix not in _CODE_SUFFIXES or path in skipped:
                continue
            try:
                stat = path.stat()
                # a data file: its size and mtime stand for its content (a module is always read: it is parsed)
                data = (f"{stat.st_size}:{stat.st_mtime_ns}".encode()
                        if stat.st_size > _MAX_HASHED_BYTES and path.suffix != ".py" else path.read_bytes())
            except OSError:
                continue
            if path.suffix in (".yml", ".yaml") and _is_rule_file(data):
                continue
            if len(found) >= _MAX_CODE_FILES:
                return found
            found[path.relative_to(app_dir).as_posix()] = data
    return found


def files_digest(files: Mapping[str, bytes], paths: Iterable[str] | None = None) -> str:
    """A digest of ``paths`` (default: all) of ``files``, each path with its content, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files if paths is None else paths):
        digest.update(path.encode() + b"\0")
        digest.update(files[path])
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _is_rule_file(data: bytes) -> bool:
    """Whether YAML text is a Prometheus rule file: a mapping of only ``groups``, each group with ``rules``."""
    if b"groups" not in data:
        return False
    try:
        doc = yaml.load(data, Loader=LocatingSafeLoader)
    except yaml.YAMLError:
        return False
    groups = doc.get("groups") if isinstance(doc, dict) and set(doc) == {"groups"} else None
    return isinstance(groups, list) and all(isinstance(g, dict) and "rules" in g for g in groups)


def read_secrets_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export``, ``#`` comments and quotes allowed); a
    malformed line is an error naming ``file:line``. A missing file is empty."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError("expected KEY=VALUE, got a line without '='", where=f"{path}:{number}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


_warned_legacy: set[Path] = set()


def resolve_secrets(names: list[str], environ: Mapping[str, str], owner: str, *, store: SecretStore | None = None,
                    legacy_file: Path | None = None) -> dict[str, str]:
    """Each named secret from ``environ``, else ``store`` (encrypted), else the plaintext ``legacy_file``.

    ``owner`` names the spec field in errors (``services.web.secrets``). The
    store is opened only for names the environment lacks, and a value taken
    from the legacy file logs a warning (once per file and process) that
    recommends ``lichen secrets import``. Values are only ever passed to a
    child's environment; they are not logged or stored.
    """
    if not names:
        return {}
    values = {name: environ[name] for name in names if name in environ}
    rest = [name for name in names if name not in values]
    if rest and store is not None:
        values.update(store.values(rest))
        rest = [name for name in rest if name not in values]
    if rest and legacy_file is not None:
        from_file = read_secrets_file(legacy_file)
        found = [name for name in rest if name in from_file]
        if found:
            values.update({name: from_file[name] for name in found})
            rest = [name for name in rest if name not in from_file]
            if legacy_file not in _warned_legacy:
                _warned_legacy.add(legacy_file)
                get_logger("lichen.secrets").warning(
                    "plaintext_secrets_file", file=str(legacy_file), names=sorted(found),
                    advice=f"move them into the encrypted store: lichen secrets import {legacy_file}, then delete "
                           f"the file")
    if rest:
        raise ConfigError(f"{owner}: {', '.join(rest)} not set; store it with `lichen secrets set NAME` "
                          f"(or export it before lichen up)")
    return {name: values[name] for name in names}


def read_secrets(names: list[str], workspace: Workspace, service: str) -> dict[str, str]:
    """A service's secrets: the controller's environment, the encrypted store, then ``.lichen/secrets.env``."""
    return resolve_secrets(names, os.environ, f"services.{service}.secrets", store=workspace.secret_store(),
                           legacy_file=workspace.secrets_file)


def visible_gpu_names() -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it (indices or ``GPU-``/``MIG-`` UUIDs, up to the first
    invalid entry, so ``-1`` means none); None when it is not set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    names = []
    for token in visible.split(","):
        name = token.strip()
        if not (name.isdigit() or name.startswith(("GPU-", "MIG-"))):
            break
        names.append(name)
    return names


def detect_gpus() -> tuple[int, ...]:
    """GPU indices on this machine (NVIDIA device nodes), honouring CUDA_VISIBLE_DEVICES.

    With UUIDs there, the indices are positions in that list (see :func:`gpu_device_list`).
    """
    names = visible_gpu_names()
    if names is not None:
        if all(name.isdigit() for name in names):
            return tuple(int(name) for name in names)
        return tuple(range(len(names)))
    return tuple(sorted(int(p.name[6:]) for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()))


def gpu_device_list(indices: tuple[int, ...]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for a replica granted ``indices`` (from :func:`detect_gpus`)."""
    names = visible_gpu_names()
    if names and not all(name.isdigit() for name in names):
        return ",".join(names[i] for i in indices if i < len(names))
    return ",".join(str(i) for i in indices)


def detect_machine() -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(cpu_cores=float(cores), memory_bytes=psutil.virtual_memory().total, gpu_indices=detect_gpus())
