"""The rendered objects, read as plain data: restricted pods, parity with `lichen up`, and what each spec field
becomes (docs/kubernetes.md). The chart's own tools (helm, kubernetes-validate, promtool) run in
tests/integration/deploy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_fixtures import RECSYS, write_shop
from kubernetes_policies import pod_security_violations, workload_label_violations
from prometheus_operator_checks import prometheus_operator_violations
from lichen.cli.main import run
from lichen.deploy.chart_values import Expr, Manifest, helm_document, helm_text, plain
from lichen.deploy.charts import chart_files, manifest_files, values_schema, default_values, render_objects
from lichen.deploy.rendering import render_context
from lichen.deploy.workloads import PRE_STOP_S, RenderContext
from lichen.runtime.launching import replica_settings
from lichen.spec.loading import load_spec
from lichen.spec.quantities import parse_cpu_cores, parse_memory_bytes



class Result:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code, self.output = exit_code, output


@pytest.fixture
def lichen(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run a lichen command line in-process as the console script does: (exit code, stdout + stderr)."""
    def invoke(*args: str) -> Result:
        code = 0
        try:
            run(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out + out.err)
    return invoke


def shop(tmp_path: Path) -> RenderContext:
    root = write_shop(tmp_path / "shop")
    return render_context(load_spec(root / "lichen.yaml"), root, "rev123")


def recsys() -> RenderContext:
    return render_context(load_spec(RECSYS / "lichen.yaml"), RECSYS, "rev456")


def objects(ctx: RenderContext) -> list[dict[str, Any]]:
    return [doc for text in manifest_files(ctx).values() for doc in yaml.safe_load_all(text) if doc]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("which", ["shop", "recsys"])
def test_every_pod_is_restricted_and_every_object_is_labelled_and_selected(tmp_path: Path, which: str) -> None:
    objs = objects(shop(tmp_path) if which == "shop" else recsys())
    workloads = [o for o in objs if o["kind"] in ("Deployment", "Rollout", "Job", "CronJob")]
    assert len(workloads) >= 4
    for obj in workloads:
        assert pod_security_violations(obj, "restricted") == []
    assert [v for o in objs for v in prometheus_operator_violations(o)] == []
    assert workload_label_violations(objs) == []


def test_probes_resources_env_and_grace_are_the_ones_lichen_up_uses(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    objs = objects(ctx)
    for name, service in ctx.spec.services.items():
        kind = "Rollout" if service.rollout.strategy == "canary" else "Deployment"
        pod = one(objs, kind, f"shop-{name}")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        for key, spec_probe in (("readinessProbe", service.probes.readiness),
                                ("livenessProbe", service.probes.liveness)):
            probe = container[key]
            assert probe["httpGet"]["path"] == spec_probe.path
            # Kubernetes counts whole seconds: a sub-second value is rounded up (docs/kubernetes.md)
            assert probe["periodSeconds"] == math.ceil(spec_probe.period_s)
            assert probe["timeoutSeconds"] == math.ceil(spec_probe.timeout_s)
            assert probe["initialDelaySeconds"] == math.ceil(spec_probe.initial_delay_s)
            assert probe["failureThreshold"] == spec_probe.failure_threshold
        assert container["readinessProbe"]["successThreshold"] == service.probes.readiness.success_threshold
        assert container["livenessProbe"]["successThreshold"] == 1  # Kubernetes allows no other
        # liveness counts only once the replica listens, within lichen up's startup window
        assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 120
        limits = container["resources"]["limits"]
        assert limits == container["resources"]["requests"]
        assert parse_cpu_cores(limits["cpu"]) == service.resources.cpu
        assert parse_memory_bytes(limits["memory"]) == service.resources.memory
        assert pod["terminationGracePeriodSeconds"] == math.ceil(service.termination_grace_s) + PRE_STOP_S
        env = {e["name"]: e for e in container["env"]}
        for key, text in service.env.items():
            assert env[key]["value"] == text
        for secret in service.secrets:
            assert env[secret]["valueFrom"]["secretKeyRef"] == {"name": "shop-secrets", "key": secret}
            assert "value" not in env[secret]
        local = replica_settings(name, "r", "x", 8000, service, Path("/app"), 1.0, {}).to_env()
        for key in ("LICHEN_TIMEOUT_S", "LICHEN_MAX_CONCURRENCY", "LICHEN_METRICS_PATH", "LICHEN_SLO_LATENCY_MS",
                    "LICHEN_GRACE_S", "LICHEN_SERVICE"):
            assert env[key]["value"] == local[key], key
        assert env["LICHEN_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def _evaluated(groups: list[Any]) -> list[tuple[Any, ...]]:
    return [(g.name, g.interval_s, g.limit, [(r.name, r.kind, r.expr, r.for_s, r.keep_firing_for_s, r.labels,
                                              r.annotations) for r in g.rules]) for g in groups]


def test_the_prometheus_rule_holds_the_groups_lichen_up_evaluates(tmp_path: Path) -> None:
    from lichen.observe.rule_files import load_rule_file, parse_rule_text
    from lichen.runtime.observing import default_groups

    ctx = shop(tmp_path)
    rule = one(objects(ctx), "PrometheusRule", "shop-rules")
    shipped = parse_rule_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), "<chart>")
    # what the controller evaluates: its default pack, then each rule file it loads
    local = default_groups(ctx.spec) + load_rule_file(tmp_path / "shop" / "rules" / "shop.yml")
    assert _evaluated(shipped) == _evaluated(local)
    assert {r.name for g in shipped for r in g.rules} >= {"LichenErrorBudgetBurn", "ShopQueueDeep"}
    # every series the rules read is labelled as `lichen up` labels it
    monitor = one(objects(ctx), "ServiceMonitor", "shop-ranker")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/internal/metrics" and endpoint["interval"] == "5s"
    relabel = {r.get("targetLabel"): r for r in endpoint["relabelings"]}
    assert relabel["service"]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert relabel["replica"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]
    assert relabel["revision"]["sourceLabels"] == ["__meta_kubernetes_pod_label_pod_template_hash",
                                                   "__meta_kubernetes_pod_label_rollouts_pod_template_hash"]
    assert relabel["job"]["replacement"] == "replica"


def test_no_default_rules_and_no_rule_files_render_no_prometheus_rule(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    bare = ctx.spec.model_copy(update={"observability": ctx.spec.observability.model_copy(
        update={"default_rules": False, "rules": []})})
    objs = objects(render_context(bare, tmp_path / "shop", "rev"))
    assert not [o for o in objs if o["kind"] == "PrometheusRule"]


def test_the_hpa_carries_kpa_rates_windows_and_bounds(tmp_path: Path) -> None:
    objs = objects(shop(tmp_path))
    hpa = one(objs, "HorizontalPodAutoscaler", "shop-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 12)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "AverageValue", "averageValue": "400m"}}}]
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["policies"] == [{"type": "Percent", "value": 200, "periodSeconds": 2}]  # x3 per interval
    assert down["policies"] == [{"type": "Percent", "value": 75, "periodSeconds": 2}]  # /4 per interval
    assert down["stabilizationWindowSeconds"] == 120 and up["stabilizationWindowSeconds"] == 0
    # the HPA owns the count: the Deployment names none, so an upgrade never resets it
    assert "replicas" not in one(objs, "Deployment", "shop-api")["spec"]


def test_a_canary_is_an_argo_rollout_judged_by_the_spec_bounds(tmp_path: Path) -> None:
    objs = objects(shop(tmp_path))
    assert not [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "shop-ranker"]
    rollout = one(objs, "Rollout", "shop-ranker")["spec"]
    assert rollout["replicas"] == 3
    assert rollout["strategy"]["canary"]["steps"] == [{"setWeight": 5}, {"pause": {"duration": "15s"}},
                                                      {"setWeight": 25}, {"pause": {"duration": "15s"}}]
    metrics = {m["name"]: m for m in one(objs, "AnalysisTemplate", "shop-ranker")["spec"]["metrics"]}
    assert set(metrics) == {"requests", "error-ratio", "p95-ms", "cache-misses-ratio", "queue-value"}
    assert metrics["error-ratio"]["successCondition"] == "isNaN(result[0]) || result[0] <= 0.02"
    assert "or vector(0), 1)" in metrics["error-ratio"]["provider"]["prometheus"]["query"]
    assert metrics["error-ratio"]["failureLimit"] == 1  # Argo counts failures allowed; failure_limit 2 aborts at 2
    assert metrics["p95-ms"]["successCondition"] == "isNaN(result[0]) || result[0] <= 250"
    assert metrics["requests"]["successCondition"] == "result[0] >= 50"
    assert metrics["requests"]["failureCondition"] == "false"  # too few requests is inconclusive: Argo pauses
    ratio = metrics["cache-misses-ratio"]["provider"]["prometheus"]["query"]
    assert 'revision=~"{{args.canary-hash}}"' in ratio and 'revision=~"{{args.stable-hash}}"' in ratio
    assert "[15s]" in ratio and '"$service"' not in ratio
    assert metrics["queue-value"]["successCondition"] == "isNaN(result[0]) || result[0] <= 100"
    assert metrics["requests"]["inconclusiveLimit"] == 6


def test_on_inconclusive_fail_aborts_after_max_inconclusive_quiet_intervals(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    ranker = ctx.spec.services["ranker"]
    analysis = ranker.rollout.analysis.model_copy(update={"on_inconclusive": "fail", "max_inconclusive": 3})
    services = {**ctx.spec.services, "ranker": ranker.model_copy(update={"rollout": ranker.rollout.model_copy(
        update={"analysis": analysis})})}
    objs = objects(RenderContext(spec=ctx.spec.model_copy(update={"services": services}), image_tag="r"))
    requests = next(m for m in one(objs, "AnalysisTemplate", "shop-ranker")["spec"]["metrics"]
                    if m["name"] == "requests")
    assert requests["failureCondition"] == "result[0] < 50" and requests["failureLimit"] == 2
    assert "inconclusiveLimit" not in requests


def test_jobs_keep_their_order_schedule_and_limits(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    assert not [o for o in objects(ctx) if o["kind"] == "Job"]  # jobs.runOnInstall is off by default
    hooks = [doc for m in render_objects(ctx) if m.obj["kind"] == "Job" for doc in [plain(m.obj)]]
    objs = objects(ctx) + hooks
    weights = {o["metadata"]["name"]: o["metadata"]["annotations"]["helm.sh/hook-weight"]
               for o in objs if o["kind"] == "Job"}
    # every job is a hook, scheduled ones too, so a dependency on one is run before its dependents
    assert weights == {"shop-prepare": "0", "shop-train": "1", "shop-report": "2", "shop-nightly": "0"}
    train = one(objs, "Job", "shop-train")["spec"]
    # timeout_s is per attempt, as under lichen run: on each pod, and every attempt's worth on the Job
    assert (train["backoffLimit"], train["activeDeadlineSeconds"]) == (2, 3 * 1800)
    assert train["template"]["spec"]["activeDeadlineSeconds"] == 1800
    container = train["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "lichen.runtime.job_process", "shop.jobs:train", "--",
                                    "--epochs", "3"]
    cron = one(objs, "CronJob", "shop-nightly")["spec"]
    assert (cron["schedule"], cron["concurrencyPolicy"], cron["startingDeadlineSeconds"]) == ("15 2 * * *",
                                                                                              "Replace", 600)
    assert (cron["successfulJobsHistoryLimit"], cron["failedJobsHistoryLimit"]) == (5, 2)


def test_only_the_gateway_reaches_the_services(tmp_path: Path) -> None:
    objs = objects(shop(tmp_path))
    policy = one(objs, "NetworkPolicy", "shop-api")["spec"]
    sources = policy["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app": "shop-gateway", "app.kubernetes.io/name": "shop",
                                            "app.kubernetes.io/instance": "shop",
                                            "app.kubernetes.io/component": "gateway"}}} in sources
    assert one(objs, "NetworkPolicy", "shop-default-deny")["spec"]["policyTypes"] == ["Ingress"]
    ingress = one(objs, "Ingress", "shop-gateway")["spec"]
    assert [r["host"] for r in ingress["rules"]] == ["www.example.com", "shop.example.com"]
    config = yaml.safe_load(one(objs, "ConfigMap", "shop-gateway")["data"]["gateway.json"])
    assert config["services"]["api"]["endpoints"] == [{"url": "http://shop-api", "replica": "shop-api",
                                                       "revision": "default", "ready": True}]
    assert config["settings"]["rate_limit"]["per_ip_rps"] == 50
    gateway = one(objs, "Deployment", "shop-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "JWT_KEY", "valueFrom": {"secretKeyRef": {"name": "shop-secrets", "key": "JWT_KEY"}}} in \
        gateway["env"]
    assert gateway["command"][:4] == ["python", "-m", "lichen", "gateway"]  # the image has no console script


def test_helm_text_escapes_literal_braces_and_places_values() -> None:
    obj = {"metadata": {"name": "x", "annotations": {"summary": "{{ $labels.service }} is down"}},
           "spec": {"replicas": Expr('index .Values "r"', 2, path="r"), "image": Expr('index .Values "i"', "img"),
                    "resources": Expr('index .Values "res"', {"limits": {"cpu": "1"}}, block=True, path="res"),
                    "list": [{"resources": Expr('index .Values "res"', {}, block=True)}]}}
    text = helm_text(obj)
    assert 'summary: \'{{ "{{" }} $labels.service {{ "}}" }} is down\'' in text
    assert "replicas: {{ index .Values \"r\" }}" in text and "image: {{ index .Values \"i\" | quote }}" in text
    assert "resources:\n{{- toYaml (index .Values \"res\") | nindent 4 }}" in text
    assert "- resources:\n{{- toYaml (index .Values \"res\") | nindent 6 }}" in text
    assert plain(obj)["spec"]["replicas"] == 2
    from lichen.deploy.chart_values import merged

    labelled = {"metadata": {"labels": {"a": "b", **merged(Expr('index .Values "extra"', {"c": "d"}, block=True))}}}
    assert plain(labelled) == {"metadata": {"labels": {"a": "b", "c": "d"}}}
    assert helm_text(labelled).endswith('    a: b\n{{- with (index .Values "extra") }}\n{{- toYaml . | nindent 4 }}\n'
                                        '{{- end }}\n')
    from lichen.deploy.chart_values import Condition

    wrapped = helm_document(Manifest("f.yaml", {"kind": "X"}, (Condition("a.b", "c", negate=True),)))
    assert wrapped.startswith('{{- if ne (index .Values "a" "b") "c" }}\n') and wrapped.endswith("{{- end }}\n")


def test_the_values_schema_closes_every_section_but_kubernetes_fields(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    values = default_values(render_objects(ctx), ctx)
    schema = values_schema(values)
    assert schema["additionalProperties"] is False
    api = schema["properties"]["services"]["properties"]["api"]
    assert api["additionalProperties"] is False and api["properties"]["resources"] == {"type": "object"}
    assert schema["properties"]["canary"]["properties"]["provider"]["enum"] == ["argo", "flagger"]
    assert values["services"]["api"]["autoscaling"] == {"minReplicas": 2, "maxReplicas": 12}
    assert values["image"]["repository"] == "registry.example.com/team/shop" and values["image"]["tag"] == "rev123"
    files = chart_files(ctx)
    assert yaml.safe_load(files["values.yaml"]) == values and values["secrets"] == {"name": "shop-secrets"}
    assert {"Chart.yaml", "values.schema.json", "templates/NOTES.txt", "templates/service-api.yaml"} <= set(files)


def _spec_line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_a_gpu_without_a_cuda_image_is_refused_at_its_line_and_nothing_is_written(tmp_path: Path, lichen: Any) -> None:
    root = write_shop(tmp_path / "shop")
    spec = root / "lichen.yaml"
    spec.write_text(spec.read_text().replace("resources: {cpu: 1, memory: 1Gi}\n    metrics_path",
                                             "resources: {cpu: 1, memory: 1Gi, gpu: 1}\n    metrics_path"))
    out = tmp_path / "chart"
    result = lichen(*["render", "helm", str(root), "--out", str(out)])
    assert result.exit_code == 2, result.output
    line = _spec_line(spec, "gpu: 1")
    assert f"lichen.yaml:{line}:" in result.output and "services.ranker.resources.gpu" in result.output
    assert "has no CUDA" in result.output and not out.exists()
    spec.write_text(spec.read_text().replace("kubernetes: {", "kubernetes: {base_image: nvcr.io/nvidia/cuda:12.4.1, "))
    assert lichen(*["render", "helm", str(root), "--out", str(out)]).exit_code == 0
    text = (out / "templates" / "service-ranker.yaml").read_text()
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["services"]["ranker"]["resources"]["limits"]["nvidia.com/gpu"] == "1" and "toYaml" in text


def test_a_host_the_ingress_cannot_express_is_refused_at_its_line(tmp_path: Path, lichen: Any) -> None:
    root = write_shop(tmp_path / "shop")
    spec = root / "lichen.yaml"
    spec.write_text(spec.read_text().replace("host: shop.example.com", "host: shop_example.com"))
    result = lichen(*["render", "kubernetes", str(root)])
    assert result.exit_code == 2
    assert f"lichen.yaml:{_spec_line(spec, 'shop_example')}:" in result.output
    assert "services.api.routes[0].host" in result.output and "cannot express host" in result.output


def test_render_replaces_only_its_own_directory_and_all_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                lichen: Any) -> None:
    root = write_shop(tmp_path / "shop")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused = lichen(*["render", "helm", str(root), "--out", str(foreign)])
    assert refused.exit_code == 2 and "not written by `lichen render`" in refused.output
    assert (foreign / "keep.txt").read_text() == "mine"
    out = tmp_path / "chart"
    assert lichen(*["render", "helm", str(root), "--out", str(out), "--tag", "one"]).exit_code == 0
    first = (out / "values.yaml").read_text()
    # a failure half-way leaves the previous chart whole and no staging directory behind
    from lichen.cli import deploying

    real = Path.write_text
    calls = {"n": 0}

    def failing(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError):
        deploying.write_tree(out, {f"f{i}.yaml": "x" for i in range(10)})
    monkeypatch.setattr(Path, "write_text", real)
    assert (out / "values.yaml").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart", "foreign", "shop"]
    assert lichen(*["render", "helm", str(root), "--out", str(out), "--tag", "two"]).exit_code == 0
    assert "tag: two" in (out / "values.yaml").read_text()


def test_the_image_tag_is_the_app_revision_and_moves_with_the_code(tmp_path: Path) -> None:
    from lichen.deploy.images import app_revision

    root = write_shop(tmp_path / "shop")
    (root / "shop").mkdir()
    (root / "shop" / "services.py").write_text("X = 1\n")
    before = app_revision(root, "python:3.11-slim")
    (root / ".lichen").mkdir()
    (root / ".lichen" / "state.db").write_text("state is never in the image")
    assert app_revision(root, "python:3.11-slim") == before
    (root / "shop" / "services.py").write_text("X = 2\n")
    after = app_revision(root, "python:3.11-slim")
    assert after != before and len(after) == 12
    assert app_revision(root, "python:3.12-slim") != after


@pytest.mark.parametrize(("edit", "field", "says"), [
    (("  ranker:\n", "  gateway:\n"), "services.gateway", "names an object the chart makes itself"),
    (("  nightly:\n", "  nightly-retraining-of-every-model-in-the-catalogue-xyz:\n"),
     "jobs.nightly-retraining-of-every-model-in-the-catalogue-xyz", "over the 52 Kubernetes allows"),
])
def test_names_kubernetes_cannot_take_are_refused_at_their_line(tmp_path: Path, lichen: Any,
                                                               edit: tuple[str, str], field: str, says: str) -> None:
    root = write_shop(tmp_path / "shop")
    spec = root / "lichen.yaml"
    spec.write_text(spec.read_text().replace(*edit))
    result = lichen("render", "kubernetes", str(root))
    assert result.exit_code == 2, result.output
    assert f"lichen.yaml:{_spec_line(spec, edit[1].strip())}:" in result.output
    assert field in result.output and says in result.output


def test_a_tag_that_looks_like_a_number_stays_a_string(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    numeric = RenderContext(spec=ctx.spec, image_tag="123456789e12", rule_groups=ctx.rule_groups)
    files = chart_files(numeric)
    assert 'tag: "123456789e12"' in files["values.yaml"] and 'appVersion: "123456789e12"' in files["Chart.yaml"]
    assert '"123456789e12"' in manifest_files(numeric)["service-api.yaml"]


def test_the_dashboard_is_provisioned_with_a_data_source_variable(tmp_path: Path) -> None:
    board = yaml.safe_load(one(objects(shop(tmp_path)), "ConfigMap", "shop-dashboard")["data"]["shop.json"])
    assert "__inputs" not in board and "DS_PROMETHEUS" not in str(board)
    assert board["templating"]["list"][0] == {"name": "datasource", "label": "data source", "type": "datasource",
                                              "query": "prometheus", "hide": 0, "current": {}}
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


def test_flagger_gets_a_canary_with_labelled_services_and_the_hpa(tmp_path: Path) -> None:
    ctx = shop(tmp_path)
    api = ctx.spec.services["api"]
    services = {**ctx.spec.services, "api": api.model_copy(update={"rollout": api.rollout.model_copy(
        update={"strategy": "canary"})})}
    flagged = RenderContext(spec=ctx.spec.model_copy(update={"services": services}), image_tag="r")
    canaries = {plain(m.obj)["metadata"]["name"]: plain(m.obj)["spec"] for m in render_objects(flagged)
                if m.obj["kind"] == "Canary"}
    assert canaries["shop-api"]["autoscalerRef"] == {"apiVersion": "autoscaling/v2",
                                                     "kind": "HorizontalPodAutoscaler", "name": "shop-api"}
    assert "autoscalerRef" not in canaries["shop-ranker"]
    service = canaries["shop-ranker"]["service"]
    assert service["primary"]["labels"]["app.kubernetes.io/component"] == "ranker" == \
        service["canary"]["labels"]["app.kubernetes.io/component"]
    assert canaries["shop-ranker"]["analysis"]["stepWeights"] == [5, 25]
    assert canaries["shop-ranker"]["provider"] == "istio"
    templates = [m.obj for m in render_objects(flagged) if m.obj["kind"] == "MetricTemplate"]
    # a query per revision has no canary to select under Flagger; one without $revision is kept
    assert sorted(plain(t)["metadata"]["name"] for t in templates if "ranker" in plain(t)["metadata"]["name"]) == [
        "shop-ranker-error-ratio", "shop-ranker-p95-ms", "shop-ranker-queue-value"]


def test_no_symlink_out_of_the_app_reaches_the_image(tmp_path: Path) -> None:
    from lichen.deploy.images import context_files

    root = write_shop(tmp_path / "shop")
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = x")
    (root / "creds").symlink_to(secret)
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    (root / "rules-link.yml").symlink_to(root / "rules" / "shop.yml")
    files = {p.as_posix() for p in context_files(root)}
    assert files == {"lichen.yaml", "rules/shop.yml", "rules-link.yml"}


def test_a_failed_swap_puts_the_previous_chart_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lichen.cli import deploying

    out = tmp_path / "chart"
    deploying.write_tree(out, {"values.yaml": "first\n"})
    real = Path.rename

    def failing(self: Path, target: Any) -> Path:
        if Path(target) == out and self.name.startswith(".chart.") and ".old." not in self.name:
            raise OSError(5, "Input/output error")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError):
        deploying.write_tree(out, {"values.yaml": "second\n"})
    monkeypatch.setattr(Path, "rename", real)
    assert (out / "values.yaml").read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart"]


def test_tracing_reaches_the_gateway_config_and_every_service_as_lichen_up_sets_it(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop")
    spec_path = root / "lichen.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["observability"]["tracing"] = {"endpoint": "http://otel-collector.monitoring:4318", "sampling_ratio": 0.2}
    spec_path.write_text(yaml.safe_dump(spec))
    ctx = render_context(load_spec(spec_path), root, "rev123")
    objs = objects(ctx)
    config = yaml.safe_load(one(objs, "ConfigMap", "shop-gateway")["data"]["gateway.json"])
    assert config["tracing"]["endpoint"] == "http://otel-collector.monitoring:4318"
    assert config["tracing"]["sampling_ratio"] == 0.2 and config["app"] == "shop"
    for name, service in ctx.spec.services.items():
        kind = "Rollout" if service.rollout.strategy == "canary" else "Deployment"
        env = {e["name"]: e.get("value") for e in
               one(objs, kind, f"shop-{name}")["spec"]["template"]["spec"]["containers"][0]["env"]}
        local = replica_settings(name, "r", "x", 8000, service, Path("/app"), 1.0, {},
                                 tracing=ctx.spec.observability.tracing).to_env()
        assert env["LICHEN_TRACE_ENDPOINT"] == local["LICHEN_TRACE_ENDPOINT"] == \
            "http://otel-collector.monitoring:4318/v1/traces"
        assert env["LICHEN_TRACE_SAMPLING_RATIO"] == local["LICHEN_TRACE_SAMPLING_RATIO"] == "0.2"
