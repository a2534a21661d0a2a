"""Each service's code digest: the files of its import closure, read from the app directory.

The controller puts this digest into the service's revision
(:func:`lichen.control.revisions.revision_id`), so ``lichen up`` on an
edited app rolls only the services whose own files changed. Which files
those are is decided purely in :mod:`lichen.control.import_closures`; this
module reads them (:func:`lichen.runtime.workspaces.code_files`, the same
files and exclusions as the whole-app digest: no ``lichen.yaml``, no rule
files) and hashes each service's share.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lichen.control.import_closures import import_closures, service_files
from lichen.runtime.workspaces import code_files, files_digest
from lichen.spec.models import AppSpec


def service_digests(app_dir: Path, app: AppSpec, exclude: Iterable[str | Path] = ()) -> dict[str, str]:
    """Service name -> a digest of the files its entrypoint's import closure reaches (``exclude``: rule files)."""
    files = code_files(app_dir, exclude)
    py_paths = [p for p in files if p.endswith(".py")]
    other_paths = [p for p in files if not p.endswith(".py")]
    entries = {name: spec.entrypoint.partition(":")[0] for name, spec in app.services.items()}
    closures = import_closures(entries, {p: files[p] for p in py_paths})
    return {name: files_digest(files, None if closure is None else service_files(closure, py_paths, other_paths))
            for name, closure in closures.items()}
