"""The model registry: versioned model directories plus a SQLite index.

Layout under the registry root (default ``<app dir>/.lichen/models``,
overridden by ``LICHEN_MODEL_REGISTRY``)::

    index.db              versions and promotion history (WAL, transactions)
    <name>/v<version>/    the files of one registered version, read-only by convention
    .staging/             copies in progress; never visible to readers

Registering copies the source into ``.staging``, fsyncs it, checksums it,
then in one ``BEGIN IMMEDIATE`` transaction allocates the next version,
renames the copy into place and inserts the index row. A process killed
at any point leaves either a complete, indexed version or nothing a reader
can see (orphans are swept on the next write).

Promotion history is a stack: ``promote`` pushes, ``rollback`` pops back to
the version promoted before the current one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lichen.errors import ConfigError, DataError, StateError
from lichen.registry.artifacts import (
    fsync_dir,
    fsync_tree,
    record_artifact,
    remove_path,
    sweep_stale_temps,
    temp_path_for,
)

REGISTRY_ENV = "LICHEN_MODEL_REGISTRY"
APP_DIR_ENV = "LICHEN_APP_DIR"
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    dataset_version TEXT,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created_at REAL NOT NULL,
    checksum TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    promoted_at REAL NOT NULL,
    rolled_back_at REAL,
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version)
);
CREATE INDEX IF NOT EXISTS model_promotions_by_name ON model_promotions (name, rolled_back_at, id);
"""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, as recorded in the index."""

    name: str
    version: int
    path: Path
    params: dict[str, Any]
    metrics: dict[str, Any]
    checksum: str
    dataset_version: str | None
    created_at: float
    promoted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "params": self.params,
            "metrics": self.metrics,
            "checksum": self.checksum,
            "dataset_version": self.dataset_version,
            "created_at": self.created_at,
            "promoted": self.promoted,
        }


@dataclass(frozen=True)
class Promotion:
    """One entry of a model's promotion history."""

    name: str
    version: int
    promoted_at: float
    rolled_back_at: float | None = None


def default_registry_root(app_dir: str | os.PathLike[str] | None = None) -> Path:
    """``$LICHEN_MODEL_REGISTRY``, else ``<app dir>/.lichen/models``.

    The app dir is the argument, else ``$LICHEN_APP_DIR`` (set by ``lichen
    run`` and ``lichen up``), else the working directory.
    """
    override = os.environ.get(REGISTRY_ENV)
    if override:
        return Path(override).expanduser().absolute()
    base = app_dir or os.environ.get(APP_DIR_ENV) or os.getcwd()
    return (Path(base) / ".lichen" / "models").absolute()


def directory_checksum(root: str | os.PathLike[str]) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    base = Path(root)
    digest = hashlib.sha256()
    files = sorted(p for p in base.rglob("*") if p.is_file())
    for file in files:
        rel = file.relative_to(base).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    """A directory of model versions with a SQLite index.

    Example::

        registry = ModelRegistry(".lichen/models")
        mv = registry.register("ease", "artifacts/ease", params={"l2": 500.0},
                               metrics={"ndcg@10": 0.35}, dataset_version="3f2a...")
        registry.promote("ease", mv.version)
        serving = registry.promoted("ease")
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root is not None else default_registry_root()
        self._initialised = False

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ------------------------------------------------------------ storage

    @property
    def index_path(self) -> Path:
        return self.root / "index.db"

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not write and not self.index_path.exists():
            raise StateError(f"no model registry at {self.root} (nothing registered yet)")
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not self._initialised:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._initialised = True
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        except sqlite3.DatabaseError as exc:
            raise StateError(f"model registry index {self.index_path}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def _check_name(name: str) -> str:
        if not MODEL_NAME_PATTERN.match(name):
            raise ConfigError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 63)")
        return name

    def _row_to_version(self, row: tuple[Any, ...], promoted_version: int | None) -> ModelVersion:
        name, version, dataset_version, params, metrics, created_at, checksum, path = row
        return ModelVersion(
            name=name,
            version=int(version),
            path=self.root / path,
            params=json.loads(params),
            metrics=json.loads(metrics),
            checksum=checksum,
            dataset_version=dataset_version,
            created_at=float(created_at),
            promoted=promoted_version == version,
        )

    @staticmethod
    def _promoted_version(conn: sqlite3.Connection, name: str) -> int | None:
        row = conn.execute(
            "SELECT version FROM model_promotions WHERE name=? AND rolled_back_at IS NULL ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        return None if row is None else int(row[0])

    _COLUMNS = "name, version, dataset_version, params, metrics, created_at, checksum, path"

    # ------------------------------------------------------------ writes

    def register(
        self,
        name: str,
        source_dir: str | os.PathLike[str],
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        dataset_version: str | None = None,
    ) -> ModelVersion:
        """Copy ``source_dir`` (or one file) in as the next version of ``name``."""
        self._check_name(name)
        source = Path(source_dir)
        if not source.exists():
            raise ConfigError(f"model source {source} does not exist")
        params_json = json.dumps(params or {}, sort_keys=True, default=str)
        metrics_json = json.dumps(metrics or {}, sort_keys=True, default=str)
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(staging_root)
        staged = temp_path_for(staging_root / name)
        try:
            if source.is_dir():
                shutil.copytree(source, staged, symlinks=False)
            else:
                staged.mkdir()
                shutil.copy2(source, staged / source.name)
            fsync_tree(staged)
            checksum = directory_checksum(staged)
            with self._connect(write=True) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute("SELECT MAX(version) FROM model_versions WHERE name=?", (name,)).fetchone()
                    version = int(row[0] or 0) + 1
                    rel = f"{name}/v{version}"
                    target = self.root / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists():  # an orphan from a process killed before its commit
                        remove_path(target)
                    created_at = time.time()
                    conn.execute(
                        f"INSERT INTO model_versions ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (name, version, dataset_version, params_json, metrics_json, created_at, checksum, rel),
                    )
                    os.rename(staged, target)
                    fsync_dir(target.parent)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    if "target" in locals() and target.exists() and not staged.exists():
                        remove_path(target)
                    raise
        finally:
            remove_path(staged)
        record_artifact(target)  # listed by `lichen runs` when registered from a job
        return ModelVersion(
            name=name,
            version=version,
            path=target,
            params=json.loads(params_json),
            metrics=json.loads(metrics_json),
            checksum=checksum,
            dataset_version=dataset_version,
            created_at=created_at,
            promoted=False,
        )

    def promote(self, name: str, version: int) -> ModelVersion:
        """Make ``version`` the one that serves; pushes onto the history."""
        self._check_name(name)
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM model_versions WHERE name=? AND version=?", (name, int(version))
                ).fetchone()
                if row is None:
                    raise ConfigError(f"model {name!r} has no version {version}{self._known_versions(conn, name)}")
                if self._promoted_version(conn, name) != int(version):
                    conn.execute(
                        "INSERT INTO model_promotions (name, version, promoted_at) VALUES (?, ?, ?)",
                        (name, int(version), time.time()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self._row_to_version(row, int(version))

    def rollback(self, name: str) -> ModelVersion:
        """Return to the version promoted before the current one."""
        self._check_name(name)
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                alive = conn.execute(
                    "SELECT id, version FROM model_promotions WHERE name=? AND rolled_back_at IS NULL "
                    "ORDER BY id DESC LIMIT 2",
                    (name,),
                ).fetchall()
                if not alive:
                    raise StateError(f"model {name!r} has never been promoted; nothing to roll back")
                if len(alive) < 2:
                    raise StateError(
                        f"model {name!r} has no earlier promoted version to roll back to "
                        f"(v{alive[0][1]} is the only one in its history)"
                    )
                conn.execute("UPDATE model_promotions SET rolled_back_at=? WHERE id=?", (time.time(), alive[0][0]))
                previous = int(alive[1][1])
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM model_versions WHERE name=? AND version=?", (name, previous)
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self._row_to_version(row, previous)

    # ------------------------------------------------------------ reads

    def _known_versions(self, conn: sqlite3.Connection, name: str) -> str:
        versions = [r[0] for r in conn.execute("SELECT version FROM model_versions WHERE name=? ORDER BY version", (name,))]
        if not versions:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM model_versions ORDER BY name")]
            return f" (no such model; known: {', '.join(names) or 'none'})"
        return f" (known versions: {', '.join(map(str, versions))})"

    def get(self, name: str, version: int) -> ModelVersion:
        self._check_name(name)
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {self._COLUMNS} FROM model_versions WHERE name=? AND version=?", (name, int(version))
            ).fetchone()
            if row is None:
                raise ConfigError(f"model {name!r} has no version {version}{self._known_versions(conn, name)}")
            return self._row_to_version(row, self._promoted_version(conn, name))

    def promoted(self, name: str) -> ModelVersion | None:
        """The version that serves now, or None when none was promoted."""
        self._check_name(name)
        if not self.index_path.exists():
            return None
        with self._connect() as conn:
            version = self._promoted_version(conn, name)
            if version is None:
                return None
            row = conn.execute(
                f"SELECT {self._COLUMNS} FROM model_versions WHERE name=? AND version=?", (name, version)
            ).fetchone()
            return self._row_to_version(row, version)

    def promoted_version(self, name: str) -> int | None:
        """Just the promoted version number: a cheap poll for servers."""
        if not self.index_path.exists():
            return None
        with self._connect() as conn:
            return self._promoted_version(conn, name)

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of one model, or all), oldest first."""
        if name is not None:
            self._check_name(name)
        if not self.index_path.exists():
            return []
        with self._connect() as conn:
            if name is None:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM model_versions ORDER BY name, version").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {self._COLUMNS} FROM model_versions WHERE name=? ORDER BY version", (name,)
                ).fetchall()
            promoted = {n: self._promoted_version(conn, n) for n in {r[0] for r in rows}}
            return [self._row_to_version(r, promoted[r[0]]) for r in rows]

    def history(self, name: str) -> list[Promotion]:
        """The promotion history of ``name``, oldest first."""
        self._check_name(name)
        if not self.index_path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, version, promoted_at, rolled_back_at FROM model_promotions WHERE name=? ORDER BY id",
                (name,),
            ).fetchall()
        return [Promotion(r[0], int(r[1]), float(r[2]), r[3]) for r in rows]

    def verify(self, name: str, version: int) -> bool:
        """True when the files on disk still match the recorded checksum."""
        mv = self.get(name, version)
        if not mv.path.is_dir():
            return False
        return directory_checksum(mv.path) == mv.checksum

    def require_verified(self, name: str, version: int) -> ModelVersion:
        """``get`` plus ``verify``; raises DataError when the files changed."""
        mv = self.get(name, version)
        if not self.verify(name, version):
            raise DataError(f"model {name} v{version} at {mv.path} does not match its checksum {mv.checksum[:12]}")
        return mv
