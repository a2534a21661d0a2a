"""Independent checkers for rendered Kubernetes objects: plain dicts in, a list
of human-readable violations out (empty = OK). Each violation names the
object as ``Kind/name`` and the field path, e.g.
``Deployment/web: spec.template.spec.containers[0].securityContext.privileged: ...``.

``pod_security_violations``
    The Pod Security Standards as the PodSecurity admission controller
    enforces them at ``enforce-version: latest`` (Kubernetes 1.35+), levels
    "baseline" and "restricted" (restricted includes baseline). Written from
    the rules in kubernetes' ``staging/src/k8s.io/pod-security-admission/policy/
    check_*.go``. Not modelled: the admin opt-in that relaxes runAsNonRoot,
    runAsUser and procMount for user-namespaced pods (``hostUsers: false``),
    the legacy seccomp annotations (ignored by the controller for 1.19+ policy
    versions), and per-version differences (the latest policy is applied).

``prometheus_operator_violations`` lives in ``prometheus_operator_checks``.

``workload_label_violations``
    Cross-object consistency of a rendered set: recommended labels, selectors
    that select something, HPA targets that exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

# =================================================================== helpers


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        return meta["name"]
    return "<no name>"


def _label(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '<no kind>')}/{_name(obj)}"


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _group(api_version: Any) -> str:
    return api_version.rpartition("/")[0] if isinstance(api_version, str) else ""


# ============================================================ Pod Security

# Where each workload kind keeps its pod template.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),  # argoproj.io only
}

# Baseline: capabilities that may be added (check_capabilities_baseline.go).
BASELINE_ALLOWED_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})

# Baseline: safe sysctls (check_sysctls.go, policy 1.32+).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",  # 1.27+
    "net.ipv4.tcp_keepalive_time",  # 1.29+
    "net.ipv4.tcp_fin_timeout",  # 1.29+
    "net.ipv4.tcp_keepalive_intvl",  # 1.29+
    "net.ipv4.tcp_keepalive_probes",  # 1.29+
    "net.ipv4.tcp_rmem",  # 1.32+
    "net.ipv4.tcp_wmem",  # 1.32+
})

# Baseline: SELinux types (check_seLinuxOptions.go; container_engine_t since 1.31).
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})

# Restricted: the only inline volume sources allowed (check_restrictedVolumes.go).
RESTRICTED_ALLOWED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})

_VALID_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
_VALID_APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_template_of(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """(pod metadata, pod spec, dotted path of the pod spec) of a workload, or None for other kinds."""
    kind = obj.get("kind")
    keys = _POD_SPEC_PATHS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        return None
    if kind == "Rollout" and _group(obj.get("apiVersion")) != "argoproj.io":
        return None
    spec = _get(obj, *keys)
    if not isinstance(spec, dict):
        return None  # e.g. a Rollout using spec.workloadRef: nothing inline to check
    meta = _get(obj, *keys[:-1], "metadata")
    return _dict(meta), spec, ".".join(keys)


def pod_security_violations(obj: dict[str, Any], level: str = "restricted") -> list[str]:
    """Violations of the Pod Security Standard ``level`` ("baseline" or "restricted")
    by the pod (template) of ``obj``; [] for kinds without one."""
    if level not in ("baseline", "restricted"):
        raise ValueError(f"level must be 'baseline' or 'restricted', not {level!r}")
    found = pod_template_of(obj)
    if found is None:
        return []
    meta, spec, base = found
    out: list[str] = []

    def add(path: str, msg: str, check: str) -> None:
        out.append(f"{_label(obj)}: {path}: {msg} [{check}]")

    _baseline_checks(meta, spec, base, add, restricted=level == "restricted")
    if level == "restricted":
        _restricted_checks(spec, base, add)
    return out


def _containers(spec: dict[str, Any], base: str) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(container, its path, a short description) for every init, app and ephemeral container."""
    for list_name in _CONTAINER_LISTS:
        for i, container in enumerate(_list(spec.get(list_name))):
            if isinstance(container, dict):
                yield container, f"{base}.{list_name}[{i}]", f'container "{container.get("name", "?")}"'


def _baseline_checks(
    meta: dict[str, Any], spec: dict[str, Any], base: str, add: Callable[[str, str, str], None], restricted: bool
) -> None:
    pod_sc = _dict(spec.get("securityContext"))

    # hostNamespaces
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            add(f"{base}.{key}", "must not be true (host namespaces)", "hostNamespaces")

    # windowsHostProcess (pod level)
    if _get(pod_sc, "windowsOptions", "hostProcess") is True:
        add(f"{base}.securityContext.windowsOptions.hostProcess", "must not be true", "windowsHostProcess")

    # seLinuxOptions (pod level)
    _check_selinux(_dict(pod_sc.get("seLinuxOptions")), f"{base}.securityContext.seLinuxOptions", "pod", add)

    # seccompProfile_baseline (pod level): if set, only RuntimeDefault or Localhost
    pod_seccomp = _get(pod_sc, "seccompProfile", "type")
    if pod_sc.get("seccompProfile") is not None and pod_seccomp not in _VALID_SECCOMP:
        add(f"{base}.securityContext.seccompProfile.type", f"must be RuntimeDefault or Localhost, not {pod_seccomp!r}",
            "seccompProfile_baseline")

    # appArmorProfile (pod field and legacy annotations)
    pod_apparmor = _get(pod_sc, "appArmorProfile", "type")
    if pod_sc.get("appArmorProfile") is not None and pod_apparmor not in _VALID_APPARMOR_TYPES:
        add(f"{base}.securityContext.appArmorProfile.type",
            f"must be RuntimeDefault or Localhost, not {pod_apparmor!r}", "appArmorProfile")
    meta_path = base.rpartition(".")[0] + ".metadata" if "." in base else "metadata"
    for key, value in _dict(meta.get("annotations")).items():
        allowed = value in ("", "runtime/default") or (isinstance(value, str) and value.startswith("localhost/"))
        if isinstance(key, str) and key.startswith(_APPARMOR_ANNOTATION_PREFIX) and not allowed:
            add(f"{meta_path}.annotations[{key!r}]",
                f"AppArmor profile must be runtime/default or localhost/*, not {value!r}", "appArmorProfile")

    # sysctls
    for i, sysctl in enumerate(_list(pod_sc.get("sysctls"))):
        name = _get(sysctl, "name")
        if name not in SAFE_SYSCTLS:
            add(f"{base}.securityContext.sysctls[{i}].name", f"{name!r} is not a safe sysctl", "sysctls")

    # volumes: hostPath (baseline) and gitRepo (baseline 1.31+); restricted replaces both
    if not restricted:
        for i, volume in enumerate(_list(spec.get("volumes"))):
            volume = _dict(volume)
            for vtype, check in (("hostPath", "hostPathVolumes"), ("gitRepo", "baselineVolumes")):
                if volume.get(vtype) is not None:
                    add(f"{base}.volumes[{i}].{vtype}",
                        f'volume "{volume.get("name", "?")}" must not use {vtype}', check)

    for container, path, who in _containers(spec, base):
        sc = _dict(container.get("securityContext"))
        # privileged
        if sc.get("privileged") is True:
            add(f"{path}.securityContext.privileged", f"{who} must not set privileged=true", "privileged")
        # capabilities_baseline
        for j, cap in enumerate(_list(_get(sc, "capabilities", "add"))):
            if cap not in BASELINE_ALLOWED_CAPABILITIES:
                add(f"{path}.securityContext.capabilities.add[{j}]", f"{who} must not add {cap!r}",
                    "capabilities_baseline")
        # hostPorts
        for j, port in enumerate(_list(container.get("ports"))):
            host_port = _get(port, "hostPort")
            if host_port not in (None, 0):
                add(f"{path}.ports[{j}].hostPort", f"{who} must not use hostPort {host_port}", "hostPorts")
        # windowsHostProcess
        if _get(sc, "windowsOptions", "hostProcess") is True:
            add(f"{path}.securityContext.windowsOptions.hostProcess", f"{who} must not set hostProcess=true",
                "windowsHostProcess")
        # seLinuxOptions
        _check_selinux(_dict(sc.get("seLinuxOptions")), f"{path}.securityContext.seLinuxOptions", who, add)
        # procMount
        proc_mount = sc.get("procMount")
        if proc_mount is not None and proc_mount != "Default":
            add(f"{path}.securityContext.procMount", f"{who} must not set procMount {proc_mount!r}", "procMount")
        # seccompProfile_baseline
        if sc.get("seccompProfile") is not None and _get(sc, "seccompProfile", "type") not in _VALID_SECCOMP:
            add(f"{path}.securityContext.seccompProfile.type",
                f"{who} must not set seccomp profile {_get(sc, 'seccompProfile', 'type')!r}", "seccompProfile_baseline")
        # appArmorProfile
        if sc.get("appArmorProfile") is not None and _get(sc, "appArmorProfile", "type") not in _VALID_APPARMOR_TYPES:
            add(f"{path}.securityContext.appArmorProfile.type",
                f"{who} must not set AppArmor profile {_get(sc, 'appArmorProfile', 'type')!r}", "appArmorProfile")
        # hostProbesAndHostLifecycle (1.34+)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            for handler in ("httpGet", "tcpSocket"):
                host = _get(container, probe, handler, "host")
                if host:
                    add(f"{path}.{probe}.{handler}.host", f"{who} must not set a probe host ({host!r})",
                        "hostProbesAndHostLifecycle")
        for hook in ("postStart", "preStop"):
            for handler in ("httpGet", "tcpSocket"):
                host = _get(container, "lifecycle", hook, handler, "host")
                if host:
                    add(f"{path}.lifecycle.{hook}.{handler}.host", f"{who} must not set a lifecycle host ({host!r})",
                        "hostProbesAndHostLifecycle")


def _check_selinux(opts: dict[str, Any], path: str, who: str, add: Callable[[str, str, str], None]) -> None:
    if not opts:
        return
    if opts.get("type", "") not in ALLOWED_SELINUX_TYPES:
        add(f"{path}.type", f"{who} must not set SELinux type {opts.get('type')!r}", "seLinuxOptions")
    for key in ("user", "role"):
        if opts.get(key):
            add(f"{path}.{key}", f"{who} must not set a SELinux {key}", "seLinuxOptions")


def _restricted_checks(spec: dict[str, Any], base: str, add: Callable[[str, str, str], None]) -> None:
    pod_sc = _dict(spec.get("securityContext"))
    # Since 1.25 these Linux-only checks do not apply to pods that declare spec.os.name: windows.
    linux = _get(spec, "os", "name") != "windows"

    # restrictedVolumes
    for i, volume in enumerate(_list(spec.get("volumes"))):
        volume = _dict(volume)
        sources = [k for k in volume if k != "name"]
        if not any(k in RESTRICTED_ALLOWED_VOLUME_TYPES and volume[k] is not None for k in sources):
            bad = next((k for k in sources if volume[k] is not None), None)
            where = f"{base}.volumes[{i}]" + (f".{bad}" if bad else "")
            add(where, f'volume "{volume.get("name", "?")}" uses restricted volume type {bad or "unknown"!r}',
                "restrictedVolumes")

    # runAsNonRoot: pod-level true covers containers that leave it unset; any explicit false fails.
    pod_nonroot = pod_sc.get("runAsNonRoot")
    if pod_nonroot is not None and pod_nonroot is not True:
        add(f"{base}.securityContext.runAsNonRoot", "must not be false", "runAsNonRoot")
    # runAsUser: 0 is forbidden at pod and container level.
    if _is_zero(pod_sc.get("runAsUser")):
        add(f"{base}.securityContext.runAsUser", "must not be 0", "runAsUser")
    # seccompProfile_restricted: pod-level valid profile covers containers that leave it unset.
    pod_seccomp_ok = _get(pod_sc, "seccompProfile", "type") in _VALID_SECCOMP

    for container, path, who in _containers(spec, base):
        sc = _dict(container.get("securityContext"))
        # allowPrivilegeEscalation must be explicitly false.
        if linux and sc.get("allowPrivilegeEscalation") is not False:
            add(f"{path}.securityContext.allowPrivilegeEscalation",
                f"{who} must set allowPrivilegeEscalation=false (is {sc.get('allowPrivilegeEscalation')!r})",
                "allowPrivilegeEscalation")
        # runAsNonRoot
        if "runAsNonRoot" in sc and sc["runAsNonRoot"] is not None:
            if sc["runAsNonRoot"] is not True:
                add(f"{path}.securityContext.runAsNonRoot", f"{who} must not set runAsNonRoot=false", "runAsNonRoot")
        elif pod_nonroot is not True:
            add(f"{path}.securityContext.runAsNonRoot",
                f"pod ({base}.securityContext.runAsNonRoot) or {who} must set runAsNonRoot=true", "runAsNonRoot")
        # runAsUser
        if _is_zero(sc.get("runAsUser")):
            add(f"{path}.securityContext.runAsUser", f"{who} must not set runAsUser=0", "runAsUser")
        # seccompProfile_restricted (explicitly bad values are reported by the baseline check)
        if linux and sc.get("seccompProfile") is None and not pod_seccomp_ok:
            add(f"{path}.securityContext.seccompProfile.type",
                f"pod ({base}.securityContext.seccompProfile.type) or {who} must set RuntimeDefault or Localhost",
                "seccompProfile_restricted")
        # capabilities_restricted
        if linux:
            drop = _list(_get(sc, "capabilities", "drop"))
            if "ALL" not in drop:
                add(f"{path}.securityContext.capabilities.drop", f'{who} must drop "ALL"', "capabilities_restricted")
            for j, cap in enumerate(_list(_get(sc, "capabilities", "add"))):
                if cap != "NET_BIND_SERVICE":
                    add(f"{path}.securityContext.capabilities.add[{j}]",
                        f"{who} may add only NET_BIND_SERVICE, not {cap!r}", "capabilities_restricted")
        # cgroupOptions
        mount_mode = _get(sc, "cgroupOptions", "mountMode")
        if mount_mode is not None and mount_mode != "ReadOnly":
            add(f"{path}.securityContext.cgroupOptions.mountMode",
                f"{who} must not set cgroup mountMode {mount_mode!r}", "cgroupOptions")


def _is_zero(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


# ================================================================= labels

REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")
_SELECTED_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Rollout"})
_SERVICE_BACKENDS = frozenset({"Deployment", "Rollout", "StatefulSet", "DaemonSet"})


def selector_matches(selector: Any, labels: dict[str, Any]) -> bool:
    """Whether a LabelSelector (matchLabels / matchExpressions) selects ``labels``.
    An empty or missing selector selects nothing here (see the callers)."""
    if not isinstance(selector, dict):
        return False
    match_labels = _dict(selector.get("matchLabels"))
    expressions = _list(selector.get("matchExpressions"))
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        expr = _dict(expr)
        key, op, values = expr.get("key"), expr.get("operator"), _list(expr.get("values"))
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def workload_label_violations(objs: Iterable[dict[str, Any]]) -> list[str]:
    """Cross-object checks on one rendered set (objects in the same namespace, a
    missing namespace counting as one namespace of its own):

    * every object has metadata.name and the labels app.kubernetes.io/name,
      app.kubernetes.io/instance and app.kubernetes.io/managed-by;
    * every Deployment / StatefulSet / DaemonSet / ReplicaSet / Rollout has a
      non-empty spec.selector that matches its own pod template's labels;
    * every Service (other than ExternalName) has a non-empty selector that
      matches the pod template labels of a Deployment, Rollout, StatefulSet or
      DaemonSet in ``objs``;
    * every HorizontalPodAutoscaler's scaleTargetRef names an object in ``objs``;
    * every PodDisruptionBudget has a non-empty selector that matches a
      workload's pod template labels.
    """
    objs = [o for o in objs if isinstance(o, dict)]
    out: list[str] = []
    templates: list[tuple[dict[str, Any], str | None, dict[str, Any]]] = []  # (obj, namespace, pod labels)
    for obj in objs:
        found = pod_template_of(obj)
        if found is not None:
            templates.append((obj, _namespace(obj), _dict(found[0].get("labels"))))

    for obj in objs:
        label = _label(obj)
        name = _get(obj, "metadata", "name")
        if not isinstance(name, str) or not name:
            out.append(f"{label}: metadata.name: required")
        labels = _dict(_get(obj, "metadata", "labels"))
        for key in REQUIRED_LABELS:
            if not isinstance(labels.get(key), str) or not labels.get(key):
                out.append(f"{label}: metadata.labels[{key!r}]: required")

        kind, ns = obj.get("kind"), _namespace(obj)
        if kind in _SELECTED_WORKLOADS and pod_template_of(obj) is not None:
            selector = _get(obj, "spec", "selector")
            tmpl_labels = _dict(_get(obj, "spec", "template", "metadata", "labels"))
            if not _dict(selector):
                out.append(f"{label}: spec.selector: required and must not be empty")
            elif not selector_matches(selector, tmpl_labels):
                out.append(f"{label}: spec.selector: {selector} does not match spec.template.metadata.labels {tmpl_labels}")
        elif kind == "Service" and _get(obj, "spec", "type") != "ExternalName":
            selector = _dict(_get(obj, "spec", "selector"))
            if not selector:
                out.append(f"{label}: spec.selector: required and must not be empty")
            elif not any(
                t.get("kind") in _SERVICE_BACKENDS and tns == ns and selector_matches({"matchLabels": selector}, tl)
                for t, tns, tl in templates
            ):
                out.append(f"{label}: spec.selector: {selector} matches no Deployment/Rollout/StatefulSet/DaemonSet pod template in this set")
        elif kind == "HorizontalPodAutoscaler":
            ref = _dict(_get(obj, "spec", "scaleTargetRef"))
            target = [
                o for o in objs
                if o.get("kind") == ref.get("kind") and _get(o, "metadata", "name") == ref.get("name")
                and _namespace(o) == ns
                and ("apiVersion" not in ref or _group(o.get("apiVersion")) == _group(ref.get("apiVersion")))
            ]
            if not ref.get("kind") or not ref.get("name"):
                out.append(f"{label}: spec.scaleTargetRef: kind and name are required")
            elif not target:
                wanted = f"{ref.get('apiVersion', '')} {ref.get('kind')}/{ref.get('name')}".strip()
                out.append(f"{label}: spec.scaleTargetRef: no {wanted} in this set")
        elif kind == "PodDisruptionBudget":
            selector = _get(obj, "spec", "selector")
            if not _dict(selector) or not (_dict(selector).get("matchLabels") or _dict(selector).get("matchExpressions")):
                out.append(f"{label}: spec.selector: required and must not be empty (an empty selector selects every pod)")
            elif not any(tns == ns and selector_matches(selector, tl) for _, tns, tl in templates):
                out.append(f"{label}: spec.selector: {selector} matches no workload pod template in this set")
    return out


def _namespace(obj: dict[str, Any]) -> str | None:
    ns = _get(obj, "metadata", "namespace")
    return ns if isinstance(ns, str) and ns else None
