"""The independent manifest checkers in tests/kubernetes_policies.py catch what
they claim to: a compliant object passes and each single mutation fails,
naming the object and the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_policies import pod_security_violations, workload_label_violations
from prometheus_operator_checks import prometheus_operator_violations

LABELS = {
    "app.kubernetes.io/name": "web",
    "app.kubernetes.io/instance": "shop",
    "app.kubernetes.io/managed-by": "lichen",
}
SELECTOR = {"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "shop"}


def restricted_container(name: str = "app") -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example/web:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }


def restricted_pod_spec() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [restricted_container("migrate")],
        "containers": [restricted_container()],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "web-config"}},
        ],
    }


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": dict(LABELS)},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": restricted_pod_spec()},
        },
    }


def cronjob() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "labels": dict(LABELS)},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {**restricted_pod_spec(), "restartPolicy": "OnFailure"}}}},
        },
    }


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def app_sc(obj: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(obj)["containers"][0]["securityContext"]


# ------------------------------------------------------------------ Pod Security


def test_compliant_restricted_deployment_passes_both_levels() -> None:
    assert pod_security_violations(deployment()) == []
    assert pod_security_violations(deployment(), level="baseline") == []


def test_compliant_cronjob_passes() -> None:
    assert pod_security_violations(cronjob()) == []


def test_kinds_without_a_pod_template_are_ignored() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"hostNetwork": True}}
    assert pod_security_violations(service) == []
    not_argo = {"apiVersion": "example.com/v1", "kind": "Rollout", "metadata": {"name": "x"},
                "spec": {"template": {"spec": {"hostPID": True, "containers": []}}}}
    assert pod_security_violations(not_argo) == []


Mutation = Callable[[dict[str, Any]], None]

# (id, mutation, field path the violation must name, fails at baseline too)
MUTATIONS: list[tuple[str, Mutation, str, bool]] = [
    ("hostNetwork", lambda d: pod_spec(d).__setitem__("hostNetwork", True),
     "spec.template.spec.hostNetwork", True),
    ("hostPID", lambda d: pod_spec(d).__setitem__("hostPID", True),
     "spec.template.spec.hostPID", True),
    ("privileged", lambda d: app_sc(d).__setitem__("privileged", True),
     "spec.template.spec.containers[0].securityContext.privileged", True),
    ("missing drop ALL", lambda d: app_sc(d)["capabilities"].__setitem__("drop", ["NET_RAW"]),
     "spec.template.spec.containers[0].securityContext.capabilities.drop", False),
    ("add SYS_ADMIN", lambda d: app_sc(d)["capabilities"].__setitem__("add", ["SYS_ADMIN"]),
     "spec.template.spec.containers[0].securityContext.capabilities.add[0]", True),
    ("add NET_RAW (baseline-allowed? no)", lambda d: app_sc(d)["capabilities"].__setitem__("add", ["NET_RAW"]),
     "spec.template.spec.containers[0].securityContext.capabilities.add[0]", True),
    ("hostPath volume", lambda d: pod_spec(d)["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}}),
     "spec.template.spec.volumes[2].hostPath", True),
    ("nfs volume", lambda d: pod_spec(d)["volumes"].append({"name": "share", "nfs": {"server": "x", "path": "/"}}),
     "spec.template.spec.volumes[2].nfs", False),
    ("runAsUser 0 on pod", lambda d: pod_spec(d)["securityContext"].__setitem__("runAsUser", 0),
     "spec.template.spec.securityContext.runAsUser", False),
    ("runAsUser 0 on container", lambda d: app_sc(d).__setitem__("runAsUser", 0),
     "spec.template.spec.containers[0].securityContext.runAsUser", False),
    ("missing runAsNonRoot", lambda d: pod_spec(d)["securityContext"].pop("runAsNonRoot"),
     "spec.template.spec.containers[0].securityContext.runAsNonRoot", False),
    ("runAsNonRoot false on container", lambda d: app_sc(d).__setitem__("runAsNonRoot", False),
     "spec.template.spec.containers[0].securityContext.runAsNonRoot", False),
    ("seccomp Unconfined on pod",
     lambda d: pod_spec(d)["securityContext"].__setitem__("seccompProfile", {"type": "Unconfined"}),
     "spec.template.spec.securityContext.seccompProfile.type", True),
    ("seccomp Unconfined on container", lambda d: app_sc(d).__setitem__("seccompProfile", {"type": "Unconfined"}),
     "spec.template.spec.containers[0].securityContext.seccompProfile.type", True),
    ("missing seccomp", lambda d: pod_spec(d)["securityContext"].pop("seccompProfile"),
     "spec.template.spec.containers[0].securityContext.seccompProfile.type", False),
    ("allowPrivilegeEscalation true", lambda d: app_sc(d).__setitem__("allowPrivilegeEscalation", True),
     "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation", False),
    ("allowPrivilegeEscalation missing", lambda d: app_sc(d).pop("allowPrivilegeEscalation"),
     "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation", False),
    ("hostPort", lambda d: pod_spec(d)["containers"][0]["ports"][0].__setitem__("hostPort", 8080),
     "spec.template.spec.containers[0].ports[0].hostPort", True),
    ("init container privileged",
     lambda d: pod_spec(d)["initContainers"][0]["securityContext"].__setitem__("privileged", True),
     "spec.template.spec.initContainers[0].securityContext.privileged", True),
    ("ephemeral container without securityContext",
     lambda d: pod_spec(d).__setitem__("ephemeralContainers", [{"name": "debug", "image": "busybox"}]),
     "spec.template.spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation", False),
    ("unsafe sysctl",
     lambda d: pod_spec(d)["securityContext"].__setitem__("sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
     "spec.template.spec.securityContext.sysctls[0].name", True),
    ("SELinux user", lambda d: app_sc(d).__setitem__("seLinuxOptions", {"user": "system_u"}),
     "spec.template.spec.containers[0].securityContext.seLinuxOptions.user", True),
    ("procMount Unmasked", lambda d: app_sc(d).__setitem__("procMount", "Unmasked"),
     "spec.template.spec.containers[0].securityContext.procMount", True),
    ("AppArmor Unconfined", lambda d: app_sc(d).__setitem__("appArmorProfile", {"type": "Unconfined"}),
     "spec.template.spec.containers[0].securityContext.appArmorProfile.type", True),
    ("AppArmor annotation unconfined",
     lambda d: d["spec"]["template"]["metadata"].__setitem__(
         "annotations", {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
     "spec.template.metadata.annotations['container.apparmor.security.beta.kubernetes.io/app']", True),
    ("probe host", lambda d: pod_spec(d)["containers"][0].__setitem__(
        "livenessProbe", {"httpGet": {"host": "10.0.0.1", "port": 8080, "path": "/"}}),
     "spec.template.spec.containers[0].livenessProbe.httpGet.host", True),
]


@pytest.mark.parametrize(("mutate", "field", "baseline_too"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_mutation_is_a_restricted_violation_naming_the_field(mutate: Mutation, field: str, baseline_too: bool) -> None:
    obj = deployment()
    mutate(obj)
    violations = pod_security_violations(obj, level="restricted")
    assert any(v.startswith(f"Deployment/web: {field}: ") for v in violations), violations
    baseline = pod_security_violations(obj, level="baseline")
    if baseline_too:
        assert any(f": {field}: " in v for v in baseline), baseline
    else:
        assert baseline == [], baseline


def test_cronjob_nesting_is_checked() -> None:
    job = cronjob()
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["hostIPC"] = True
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    violations = pod_security_violations(job)
    assert any(v.startswith("CronJob/nightly: spec.jobTemplate.spec.template.spec.hostIPC: ") for v in violations)
    assert any(
        "spec.jobTemplate.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation" in v
        for v in violations
    )


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_template_kinds_are_checked(kind: str) -> None:
    obj = deployment()
    obj["kind"] = kind
    assert pod_security_violations(obj) == []
    pod_spec(obj)["hostNetwork"] = True
    assert pod_security_violations(obj) == [
        f"{kind}/web: spec.template.spec.hostNetwork: must not be true (host namespaces) [hostNamespaces]"
    ]


def test_pod_and_argo_rollout_are_checked() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": restricted_pod_spec()}
    assert pod_security_violations(pod) == []
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = True
    assert any(v.startswith("Pod/p: spec.containers[0].securityContext.privileged: ") for v in pod_security_violations(pod))

    rollout = deployment()
    rollout.update(apiVersion="argoproj.io/v1alpha1", kind="Rollout")
    assert pod_security_violations(rollout) == []
    app_sc(rollout)["capabilities"]["add"] = ["NET_ADMIN"]
    assert any(v.startswith("Rollout/web: spec.template.spec.containers[0].securityContext.capabilities.add[0]: ")
               for v in pod_security_violations(rollout))


def test_container_level_settings_can_replace_pod_level_ones() -> None:
    obj = deployment()
    pod_spec(obj)["securityContext"] = {}
    for container in pod_spec(obj)["initContainers"] + pod_spec(obj)["containers"]:
        container["securityContext"].update(runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})
    assert pod_security_violations(obj) == []
    del pod_spec(obj)["initContainers"][0]["securityContext"]["seccompProfile"]
    assert [v.split(": ")[1] for v in pod_security_violations(obj)] == [
        "spec.template.spec.initContainers[0].securityContext.seccompProfile.type"
    ]


def test_net_bind_service_is_the_one_capability_restricted_allows() -> None:
    obj = deployment()
    app_sc(obj)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert pod_security_violations(obj) == []


def test_windows_pods_are_exempt_from_linux_only_restricted_checks() -> None:
    obj = deployment()
    pod_spec(obj)["os"] = {"name": "windows"}
    pod_spec(obj)["securityContext"].pop("seccompProfile")
    app_sc(obj).pop("allowPrivilegeEscalation")
    app_sc(obj).pop("capabilities")
    assert pod_security_violations(obj) == []


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        pod_security_violations(deployment(), level="strict")


# ------------------------------------------------------------ prometheus-operator


def service_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web", "labels": dict(LABELS)},
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "namespaceSelector": {"matchNames": ["shop"]},
            "endpoints": [{
                "port": "http",
                "path": "/metrics",
                "scheme": "http",
                "interval": "30s",
                "scrapeTimeout": "10s",
                "honorLabels": False,
                "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"}],
                "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}],
            }],
        },
    }


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "web", "labels": dict(LABELS)},
        "spec": {"groups": [
            {"name": "web.recording", "interval": "1m", "rules": [
                {"record": "job:http_requests:rate5m", "expr": "sum by (job) (rate(http_requests_total[5m]))"},
            ]},
            {"name": "web.alerts", "rules": [
                {"alert": "WebHighErrorRate",
                 "expr": 'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05',
                 "for": "10m", "keep_firing_for": "5m",
                 "labels": {"severity": "page"},
                 "annotations": {"summary": "More than 5% of requests fail"}},
            ]},
        ]},
    }


def test_valid_service_monitor_and_prometheus_rule_pass() -> None:
    assert prometheus_operator_violations(service_monitor()) == []
    assert prometheus_operator_violations(prometheus_rule()) == []


def test_other_kinds_are_ignored() -> None:
    assert prometheus_operator_violations(deployment()) == []
    assert prometheus_operator_violations({"apiVersion": "example.com/v1", "kind": "ServiceMonitor"}) == []


def sm_endpoint(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["endpoints"][0]


def rule_groups(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["groups"]


PROM_MUTATIONS: list[tuple[str, Callable[[], dict[str, Any]], Mutation, str]] = [
    ("unknown spec field", service_monitor, lambda o: o["spec"].__setitem__("scrapeInterval", "30s"),
     "ServiceMonitor/web: spec.scrapeInterval: unknown field"),
    ("unknown endpoint field", service_monitor, lambda o: sm_endpoint(o).__setitem__("portName", "http"),
     "ServiceMonitor/web: spec.endpoints[0].portName: unknown field"),
    ("unknown selector field", service_monitor, lambda o: o["spec"]["selector"].__setitem__("app", "web"),
     "ServiceMonitor/web: spec.selector.app: unknown field"),
    ("unknown namespaceSelector field", service_monitor,
     lambda o: o["spec"]["namespaceSelector"].__setitem__("names", ["shop"]),
     "ServiceMonitor/web: spec.namespaceSelector.names: unknown field"),
    ("bad interval", service_monitor, lambda o: sm_endpoint(o).__setitem__("interval", "30 seconds"),
     "ServiceMonitor/web: spec.endpoints[0].interval: "),
    ("fractional duration", service_monitor, lambda o: sm_endpoint(o).__setitem__("scrapeTimeout", "1.5s"),
     "ServiceMonitor/web: spec.endpoints[0].scrapeTimeout: "),
    ("duration as number", service_monitor, lambda o: sm_endpoint(o).__setitem__("interval", 30),
     "ServiceMonitor/web: spec.endpoints[0].interval: must be a Prometheus duration string"),
    ("timeout above interval", service_monitor, lambda o: sm_endpoint(o).__setitem__("scrapeTimeout", "1m"),
     "ServiceMonitor/web: spec.endpoints[0].scrapeTimeout: 1m is longer than interval 30s"),
    ("no port", service_monitor, lambda o: sm_endpoint(o).pop("port"),
     "ServiceMonitor/web: spec.endpoints[0]: needs port"),
    ("bad scheme", service_monitor, lambda o: sm_endpoint(o).__setitem__("scheme", "HTTP"),
     "ServiceMonitor/web: spec.endpoints[0].scheme: "),
    ("honorLabels as string", service_monitor, lambda o: sm_endpoint(o).__setitem__("honorLabels", "true"),
     "ServiceMonitor/web: spec.endpoints[0].honorLabels: must be a boolean"),
    ("matchLabels as list", service_monitor, lambda o: o["spec"]["selector"].__setitem__("matchLabels", ["web"]),
     "ServiceMonitor/web: spec.selector.matchLabels: must be a map"),
    ("replace relabel without targetLabel", service_monitor, lambda o: sm_endpoint(o)["relabelings"][0].pop("targetLabel"),
     "ServiceMonitor/web: spec.endpoints[0].relabelings[0].targetLabel: required"),
    ("missing selector", service_monitor, lambda o: o["spec"].pop("selector"),
     "ServiceMonitor/web: spec.selector: required"),
    ("missing endpoints", service_monitor, lambda o: o["spec"].pop("endpoints"),
     "ServiceMonitor/web: spec.endpoints: required"),
    ("missing name", service_monitor, lambda o: o["metadata"].pop("name"),
     "ServiceMonitor/<no name>: metadata.name: required"),
    ("unknown top-level field", prometheus_rule, lambda o: o.__setitem__("groups", []),
     "PrometheusRule/web: groups: unknown field"),
    ("unknown group field", prometheus_rule, lambda o: rule_groups(o)[0].__setitem__("evaluation_interval", "1m"),
     "PrometheusRule/web: spec.groups[0].evaluation_interval: unknown field"),
    ("unknown rule field", prometheus_rule, lambda o: rule_groups(o)[1]["rules"][0].__setitem__("severity", "page"),
     "PrometheusRule/web: spec.groups[1].rules[0].severity: unknown field"),
    ("bad for", prometheus_rule, lambda o: rule_groups(o)[1]["rules"][0].__setitem__("for", "10 minutes"),
     "PrometheusRule/web: spec.groups[1].rules[0].for: "),
    ("bad group interval", prometheus_rule, lambda o: rule_groups(o)[0].__setitem__("interval", "1m30"),
     "PrometheusRule/web: spec.groups[0].interval: "),
    ("both record and alert", prometheus_rule, lambda o: rule_groups(o)[0]["rules"][0].__setitem__("alert", "X"),
     "PrometheusRule/web: spec.groups[0].rules[0]: exactly one of record and alert must be set, got both"),
    ("neither record nor alert", prometheus_rule, lambda o: rule_groups(o)[0]["rules"][0].pop("record"),
     "PrometheusRule/web: spec.groups[0].rules[0]: exactly one of record and alert must be set, got neither"),
    ("for on a recording rule", prometheus_rule, lambda o: rule_groups(o)[0]["rules"][0].__setitem__("for", "5m"),
     "PrometheusRule/web: spec.groups[0].rules[0].for: only valid on alerting rules"),
    ("annotations on a recording rule", prometheus_rule,
     lambda o: rule_groups(o)[0]["rules"][0].__setitem__("annotations", {"a": "b"}),
     "PrometheusRule/web: spec.groups[0].rules[0].annotations: only valid on alerting rules"),
    ("duplicate group names", prometheus_rule, lambda o: rule_groups(o)[1].__setitem__("name", "web.recording"),
     "PrometheusRule/web: spec.groups[1].name: duplicate rule group name 'web.recording'"),
    ("missing expr", prometheus_rule, lambda o: rule_groups(o)[1]["rules"][0].pop("expr"),
     "PrometheusRule/web: spec.groups[1].rules[0].expr: required"),
    ("empty expr", prometheus_rule, lambda o: rule_groups(o)[1]["rules"][0].__setitem__("expr", " "),
     "PrometheusRule/web: spec.groups[1].rules[0].expr: must not be empty"),
    ("labels as list", prometheus_rule, lambda o: rule_groups(o)[1]["rules"][0].__setitem__("labels", ["page"]),
     "PrometheusRule/web: spec.groups[1].rules[0].labels: must be a map"),
    ("label value not a string", prometheus_rule,
     lambda o: rule_groups(o)[1]["rules"][0]["labels"].__setitem__("priority", 1),
     "PrometheusRule/web: spec.groups[1].rules[0].labels['priority']: must be a string"),
    ("bad metric name", prometheus_rule, lambda o: rule_groups(o)[0]["rules"][0].__setitem__("record", "job-rate"),
     "PrometheusRule/web: spec.groups[0].rules[0].record: must be a valid metric name"),
    ("group without name", prometheus_rule, lambda o: rule_groups(o)[0].pop("name"),
     "PrometheusRule/web: spec.groups[0].name: required"),
    ("groups as map", prometheus_rule, lambda o: o["spec"].__setitem__("groups", {"name": "x"}),
     "PrometheusRule/web: spec.groups: must be a list"),
]


@pytest.mark.parametrize(("make", "mutate", "expected"), [m[1:] for m in PROM_MUTATIONS], ids=[m[0] for m in PROM_MUTATIONS])
def test_each_prometheus_mutation_is_reported(make: Callable[[], dict[str, Any]], mutate: Mutation, expected: str) -> None:
    obj = make()
    mutate(obj)
    violations = prometheus_operator_violations(obj)
    assert any(v.startswith(expected) for v in violations), violations


@pytest.mark.parametrize("duration", ["0", "30s", "1m30s", "1h", "2d12h", "1y", "500ms", "1w2d3h4m5s6ms"])
def test_valid_durations(duration: str) -> None:
    obj = prometheus_rule()
    rule_groups(obj)[1]["rules"][0]["for"] = duration
    assert prometheus_operator_violations(obj) == []


@pytest.mark.parametrize("duration", ["", "30", "1.5m", "30S", "1s1m", "-1m", "1 m", "PT30S"])
def test_invalid_durations(duration: str) -> None:
    obj = prometheus_rule()
    rule_groups(obj)[1]["rules"][0]["for"] = duration
    assert prometheus_operator_violations(obj) != []


# ------------------------------------------------------------------- labels


def labelled_set() -> list[dict[str, Any]]:
    meta = {"labels": dict(LABELS)}
    return [
        deployment(),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", **copy.deepcopy(meta)},
         "spec": {"selector": dict(SELECTOR), "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", **copy.deepcopy(meta)},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                  "minReplicas": 2, "maxReplicas": 5}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", **copy.deepcopy(meta)},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(SELECTOR)}}},
        service_monitor(),
    ]


def test_consistent_set_passes() -> None:
    assert workload_label_violations(labelled_set()) == []


def test_missing_recommended_label_is_reported() -> None:
    objs = labelled_set()
    del objs[3]["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert workload_label_violations(objs) == [
        "PodDisruptionBudget/web: metadata.labels['app.kubernetes.io/managed-by']: required"
    ]


def test_missing_name_is_reported() -> None:
    objs = labelled_set()
    del objs[4]["metadata"]["name"]
    assert workload_label_violations(objs) == ["ServiceMonitor/<no name>: metadata.name: required"]


def test_deployment_selector_must_match_its_template() -> None:
    objs = labelled_set()
    objs[0]["spec"]["selector"]["matchLabels"]["tier"] = "frontend"
    assert [v.split(": ")[:2] for v in workload_label_violations(objs)] == [["Deployment/web", "spec.selector"]]


def test_service_selecting_no_workload_is_reported() -> None:
    objs = labelled_set()
    objs[1]["spec"]["selector"] = {"app.kubernetes.io/name": "wbe"}
    violations = workload_label_violations(objs)
    assert len(violations) == 1 and violations[0].startswith("Service/web: spec.selector: ")


def test_service_in_another_namespace_does_not_match() -> None:
    objs = labelled_set()
    objs[1]["metadata"]["namespace"] = "other"
    assert any(v.startswith("Service/web: spec.selector: ") for v in workload_label_violations(objs))


def test_service_may_select_a_rollout() -> None:
    objs = labelled_set()
    objs[0].update(apiVersion="argoproj.io/v1alpha1", kind="Rollout")
    objs[2]["spec"]["scaleTargetRef"] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}
    assert workload_label_violations(objs) == []


def test_hpa_target_must_exist() -> None:
    objs = labelled_set()
    objs[2]["spec"]["scaleTargetRef"]["name"] = "api"
    assert workload_label_violations(objs) == [
        "HorizontalPodAutoscaler/web: spec.scaleTargetRef: no apps/v1 Deployment/api in this set"
    ]
    objs[2]["spec"]["scaleTargetRef"].update(name="web", kind="StatefulSet")
    assert len(workload_label_violations(objs)) == 1


def test_pdb_selector_must_match_a_workload() -> None:
    objs = labelled_set()
    objs[3]["spec"]["selector"] = {"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["api"]}]}
    assert [v.split(": ")[:2] for v in workload_label_violations(objs)] == [["PodDisruptionBudget/web", "spec.selector"]]
    objs[3]["spec"]["selector"] = {}
    assert "every pod" in workload_label_violations(objs)[0]
    objs[3]["spec"]["selector"] = {"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["api", "web"]},
        {"key": "canary", "operator": "DoesNotExist"}]}
    assert workload_label_violations(objs) == []
