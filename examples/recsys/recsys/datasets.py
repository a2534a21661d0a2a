"""The versioned, checksummed interaction dataset store.

Layout (``--store``, default ``.lichen/datasets`` under the app directory)::

    <store>/<version>/interactions.npz   users, items, ratings, timestamps
    <store>/<version>/items.json         item metadata, when the source had it
    <store>/<version>/manifest.json      version, sha256 of each file, counts, source, report
    <store>/LATEST                       the version the next job reads by default

The version is ``ds-`` plus the first 12 hex digits of a sha256 over the
interaction arrays, so ingesting the same data twice gives the same version.
Each version directory and the LATEST pointer are written with
``lichen.atomic_output``: a reader sees a whole version or none.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from lichen import DataError, atomic_output

from recsys.downloading import sha256_file
from recsys.interactions import Interactions

DEFAULT_STORE = Path(".lichen") / "datasets"
LATEST = "LATEST"
FILES = ("interactions.npz", "items.json")


def content_version(data: Interactions) -> str:
    digest = hashlib.sha256()
    for array in (data.users, data.items, data.ratings, data.timestamps):
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))  # the same bytes, not copied
    return "ds-" + digest.hexdigest()[:12]


def write_dataset(store: str | Path, data: Interactions, *, items: dict[int, dict] | None = None,
                  report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``data`` as a new version (or reuse an identical, intact one) and point LATEST at it."""
    store = Path(store)
    version = content_version(data)
    target = store / version
    manifest: dict[str, Any]
    try:
        manifest = verify_version(store, version)
    except DataError:
        with atomic_output(target, directory=True) as tmp:
            np.savez(tmp / "interactions.npz", users=data.users, items=data.items,
                     ratings=data.ratings, timestamps=data.timestamps)
            if items:
                (tmp / "items.json").write_text(json.dumps({str(k): v for k, v in sorted(items.items())}))
            manifest = {
                "version": version,
                "created_at": time.time(),
                "rows": len(data),
                "users": data.n_users,
                "items": data.n_items,
                "sha256": {name: sha256_file(tmp / name) for name in FILES if (tmp / name).exists()},
                **(report or {}),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with atomic_output(store / LATEST) as tmp:
        tmp.write_text(version + "\n")
    return manifest


def latest_version(store: str | Path) -> str:
    pointer = Path(store) / LATEST
    if not pointer.is_file():
        raise DataError("no dataset yet: run the ingest job first (lichen run ingest)", where=str(store))
    return pointer.read_text().strip()


def verify_version(store: str | Path, version: str) -> dict[str, Any]:
    """The manifest of an intact version; DataError when missing or corrupt."""
    directory = Path(store) / version
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"dataset version {version} not found", where=str(directory))
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest.get("sha256", {}).items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != expected:
            raise DataError(f"checksum mismatch for {name}: the dataset is corrupt, ingest again",
                            where=str(path))
    return manifest


def load_dataset(store: str | Path, version: str | None = None) -> tuple[Interactions, dict[str, Any]]:
    """Read a version (LATEST by default) after verifying its checksums."""
    version = version or latest_version(store)
    manifest = verify_version(store, version)
    with np.load(Path(store) / version / "interactions.npz") as arrays:
        data = Interactions.from_arrays(arrays["users"], arrays["items"], arrays["ratings"], arrays["timestamps"])
    return data, manifest


def load_items(store: str | Path, version: str) -> dict[int, dict]:
    path = Path(store) / version / "items.json"
    if not path.is_file():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}
