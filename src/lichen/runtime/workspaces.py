"""Where an app's control-plane files live, and the facts the controller reads from disk.

``APP_DIR/.lichen/`` holds ``token`` (mode 0600), ``controller.json``
(pid, API port), ``controller.lock``, ``logs/<replica>.log`` and the
optional ``secrets.env``. The state database path comes from
``state.url`` in ``lichen.yaml``, relative to the app dir.
"""

from __future__ import annotations

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
        return self.root / "secrets.env"

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
        doc = yaml.safe_load(data)
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


def resolve_secrets(names: list[str], secrets_file: Path, environ: Mapping[str, str], owner: str) -> dict[str, str]:
    """Each named secret from ``environ``, else from ``secrets_file``.

    ``owner`` names the spec field in errors (``services.web.secrets``).
    Values are only ever passed to a child's environment; they are not logged
    or stored.
    """
    if not names:
        return {}
    from_file = read_secrets_file(secrets_file)
    values: dict[str, str] = {}
    missing = []
    for name in names:
        if name in environ:
            values[name] = environ[name]
        elif name in from_file:
            values[name] = from_file[name]
        else:
            missing.append(name)
    if missing:
        raise ConfigError(f"{owner}: {', '.join(missing)} not set; export it or add NAME=VALUE to {secrets_file}")
    return values


def read_secrets(names: list[str], workspace: Workspace, service: str) -> dict[str, str]:
    """A service's secrets from the controller's environment, else ``.lichen/secrets.env``."""
    return resolve_secrets(names, workspace.secrets_file, os.environ, f"services.{service}.secrets")


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
