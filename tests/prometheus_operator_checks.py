"""``prometheus_operator_violations``: ``monitoring.coreos.com/v1`` ServiceMonitor and PrometheusRule, from the
prometheus-operator API reference / CRD schemas (operator 0.84), plus the checks the operator and Prometheus'
rule parser make at load time. Plain dicts in, human-readable violations out (empty = OK), as in
``kubernetes_policies``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kubernetes_policies import _label, _list, _group

# ====================================================== prometheus-operator

PROMETHEUS_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_DURATION_UNITS_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
                      "m": 60_000, "s": 1000, "ms": 1}
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_BYTE_SIZE = re.compile(r"(^0|([0-9]*[.])?[0-9]+((K|M|G|T|E|P)i?)?B)$")
_PROXY_URL = re.compile(r"^(http|https|socks5)://.+$")
_PARTIAL_RESPONSE = re.compile(r"^(?i:abort|warn)?$")
_SCRAPE_PROTOCOLS = ("PrometheusProto", "OpenMetricsText0.0.1", "OpenMetricsText1.0.0",
                     "PrometheusText0.0.4", "PrometheusText1.0.0")
_RELABEL_ACTIONS = ("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                    "lowercase", "uppercase", "keepequal", "dropequal")
_RELABEL_NEEDS_TARGET = ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")
_TOP_LEVEL_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_METADATA_KEYS = frozenset({
    "name", "namespace", "labels", "annotations", "generateName", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
    "managedFields", "selfLink",
})

# A field spec: (type name, extra validation or None). The type names below.
_Spec = dict[str, tuple[str, Any]]

_SECRET_KEY_SELECTOR: _Spec = {"key": ("str", None), "name": ("str", None), "optional": ("bool", None)}
_CONFIGMAP_OR_SECRET: _Spec = {"configMap": ("obj", _SECRET_KEY_SELECTOR), "secret": ("obj", _SECRET_KEY_SELECTOR)}
_SAFE_TLS_CONFIG: _Spec = {
    "ca": ("obj", _CONFIGMAP_OR_SECRET), "cert": ("obj", _CONFIGMAP_OR_SECRET),
    "insecureSkipVerify": ("bool", None), "keySecret": ("obj", _SECRET_KEY_SELECTOR),
    "maxVersion": ("enum", ("TLS10", "TLS11", "TLS12", "TLS13")),
    "minVersion": ("enum", ("TLS10", "TLS11", "TLS12", "TLS13")), "serverName": ("str", None),
}
_TLS_CONFIG: _Spec = {**_SAFE_TLS_CONFIG, "caFile": ("str", None), "certFile": ("str", None), "keyFile": ("str", None)}
_PROXY_FIELDS: _Spec = {
    "noProxy": ("str", None), "proxyConnectHeader": ("map", "list"), "proxyFromEnvironment": ("bool", None),
    "proxyUrl": ("pattern", _PROXY_URL),
}
_OAUTH2: _Spec = {
    "clientId": ("obj", _CONFIGMAP_OR_SECRET), "clientSecret": ("obj", _SECRET_KEY_SELECTOR),
    "endpointParams": ("map", "str"), "scopes": ("list", "str"), "tlsConfig": ("obj", _SAFE_TLS_CONFIG),
    "tokenUrl": ("str", None), **_PROXY_FIELDS,
}
_RELABEL_CONFIG: _Spec = {
    "action": ("action", None),
    "modulus": ("int", None), "regex": ("str", None), "replacement": ("str", None), "separator": ("str", None),
    "sourceLabels": ("list", "labelname"), "targetLabel": ("str", None),
}
_LABEL_SELECTOR: _Spec = {"matchLabels": ("map", "str"), "matchExpressions": ("list", "requirement")}
_ENDPOINT: _Spec = {
    "port": ("str", None), "targetPort": ("intorstr", None), "path": ("str", None),
    "scheme": ("enum", ("http", "https")), "params": ("map", "list"), "interval": ("duration", None),
    "scrapeTimeout": ("duration", None), "tlsConfig": ("obj", _TLS_CONFIG), "bearerTokenFile": ("str", None),
    "bearerTokenSecret": ("obj", _SECRET_KEY_SELECTOR),
    "authorization": ("obj", {"credentials": ("obj", _SECRET_KEY_SELECTOR), "type": ("str", None)}),
    "basicAuth": ("obj", {"username": ("obj", _SECRET_KEY_SELECTOR), "password": ("obj", _SECRET_KEY_SELECTOR)}),
    "oauth2": ("obj", _OAUTH2), "honorLabels": ("bool", None), "honorTimestamps": ("bool", None),
    "trackTimestampsStaleness": ("bool", None), "metricRelabelings": ("list", "relabel"),
    "relabelings": ("list", "relabel"), "followRedirects": ("bool", None), "enableHttp2": ("bool", None),
    "filterRunning": ("bool", None), **_PROXY_FIELDS,
}
_SERVICE_MONITOR_SPEC: _Spec = {
    "jobLabel": ("str", None), "targetLabels": ("list", "str"), "podTargetLabels": ("list", "str"),
    "endpoints": ("list", "endpoint"), "selector": ("obj", _LABEL_SELECTOR),
    "selectorMechanism": ("enum", ("RelabelConfig", "RoleSelector")),
    "namespaceSelector": ("obj", {"any": ("bool", None), "matchNames": ("list", "str")}),
    "sampleLimit": ("uint", None), "scrapeProtocols": ("list", "protocol"),
    "fallbackScrapeProtocol": ("enum", _SCRAPE_PROTOCOLS), "targetLimit": ("uint", None),
    "labelLimit": ("uint", None), "labelNameLengthLimit": ("uint", None), "labelValueLengthLimit": ("uint", None),
    "scrapeClassicHistograms": ("bool", None), "nativeHistogramBucketLimit": ("uint", None),
    "nativeHistogramMinBucketFactor": ("intorstr", None), "convertClassicHistogramsToNHCB": ("bool", None),
    "keepDroppedTargets": ("uint", None), "attachMetadata": ("obj", {"node": ("bool", None)}),
    "scrapeClass": ("nonempty", None), "bodySizeLimit": ("pattern", _BYTE_SIZE),
}
_RULE_GROUP_KEYS = frozenset({"name", "interval", "rules", "limit", "partial_response_strategy", "labels", "query_offset"})
_RULE_KEYS = frozenset({"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"})


def prometheus_operator_violations(obj: dict[str, Any]) -> list[str]:
    """Violations of a ``monitoring.coreos.com/v1`` ServiceMonitor or PrometheusRule; [] for other objects."""
    if _group(obj.get("apiVersion")) != "monitoring.coreos.com" or obj.get("kind") not in ("ServiceMonitor", "PrometheusRule"):
        return []
    out: list[str] = []
    label = _label(obj)

    def add(path: str, msg: str) -> None:
        out.append(f"{label}: {path}: {msg}")

    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        add("apiVersion", f"must be monitoring.coreos.com/v1, not {obj.get('apiVersion')!r}")
    for key in obj:
        if key not in _TOP_LEVEL_KEYS:
            add(str(key), "unknown field")
    _check_metadata(obj.get("metadata"), add)
    spec = obj.get("spec")
    if spec is None:
        add("spec", "required")
        return out
    if not isinstance(spec, dict):
        add("spec", f"must be an object, got {_type_name(spec)}")
        return out
    if obj["kind"] == "ServiceMonitor":
        _check_service_monitor(spec, add)
    else:
        _check_prometheus_rule(spec, add)
    return out


def _check_metadata(meta: Any, add: Callable[[str, str], None]) -> None:
    if not isinstance(meta, dict):
        add("metadata", "required object")
        return
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        add("metadata.name", "required non-empty string")
    for key in meta:
        if key not in _METADATA_KEYS:
            add(f"metadata.{key}", "unknown field")
    for key in ("labels", "annotations"):
        if key in meta:
            _check_field(meta[key], ("map", "str"), f"metadata.{key}", add)


def _check_service_monitor(spec: dict[str, Any], add: Callable[[str, str], None]) -> None:
    _check_object(spec, _SERVICE_MONITOR_SPEC, "spec", add)
    for required in ("selector", "endpoints"):
        if required not in spec:
            add(f"spec.{required}", "required")
    for i, endpoint in enumerate(_list(spec.get("endpoints"))):
        if not isinstance(endpoint, dict):
            continue
        path = f"spec.endpoints[{i}]"
        if endpoint.get("port") in (None, "") and endpoint.get("targetPort") in (None, ""):
            add(path, "needs port (a Service port name) or targetPort")
        auth = [k for k in ("authorization", "basicAuth", "oauth2") if k in endpoint]
        if len(auth) > 1:
            add(path, f"at most one of authorization, basicAuth, oauth2 may be set, got {', '.join(auth)}")
        interval, timeout = _duration_ms(endpoint.get("interval")), _duration_ms(endpoint.get("scrapeTimeout"))
        if interval is not None and timeout is not None and timeout > interval:
            add(f"{path}.scrapeTimeout",
                f"{endpoint['scrapeTimeout']} is longer than interval {endpoint['interval']} (the operator rejects it)")
        oauth2 = endpoint.get("oauth2")
        if isinstance(oauth2, dict):
            for required in ("clientId", "clientSecret", "tokenUrl"):
                if required not in oauth2:
                    add(f"{path}.oauth2.{required}", "required")


def _check_prometheus_rule(spec: dict[str, Any], add: Callable[[str, str], None]) -> None:
    for key in spec:
        if key != "groups":
            add(f"spec.{key}", "unknown field")
    groups = spec.get("groups")
    if groups is None:
        return
    if not isinstance(groups, list):
        add("spec.groups", f"must be a list, got {_type_name(groups)}")
        return
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        gpath = f"spec.groups[{i}]"
        if not _closed_object(group, _RULE_GROUP_KEYS, gpath, add):
            continue
        name = group.get("name")
        if not isinstance(name, str) or not name:
            add(f"{gpath}.name", "required non-empty string")
        elif name in seen:
            add(f"{gpath}.name", f"duplicate rule group name {name!r} (also spec.groups[{seen[name]}])")
        else:
            seen[name] = i
        for key, kind in (("interval", ("duration", None)), ("query_offset", ("duration", None)),
                          ("limit", ("uint", None)), ("labels", ("map", "labelvalue")),
                          ("partial_response_strategy", ("pattern", _PARTIAL_RESPONSE))):
            if key in group:
                _check_field(group[key], kind, f"{gpath}.{key}", add)
        rules = group.get("rules")
        if rules is None:
            continue
        if not isinstance(rules, list):
            add(f"{gpath}.rules", f"must be a list, got {_type_name(rules)}")
            continue
        for j, rule in enumerate(rules):
            _check_rule(rule, f"{gpath}.rules[{j}]", add)


def _closed_object(value: Any, keys: frozenset[str], path: str, add: Callable[[str, str], None]) -> bool:
    """Whether ``value`` is a mapping (a violation when not); each key it has outside ``keys`` is one too."""
    if not isinstance(value, dict):
        add(path, f"must be an object, got {_type_name(value)}")
        return False
    for key in value:
        if key not in keys:
            add(f"{path}.{key}", "unknown field")
    return True


def _check_rule(rule: Any, path: str, add: Callable[[str, str], None]) -> None:
    if not _closed_object(rule, _RULE_KEYS, path, add):
        return
    record, alert = rule.get("record"), rule.get("alert")
    if record is not None and alert is not None:
        add(path, "exactly one of record and alert must be set, got both")
    elif record is None and alert is None:
        add(path, "exactly one of record and alert must be set, got neither")
    if record is not None:
        if not isinstance(record, str) or not METRIC_NAME.match(record):
            add(f"{path}.record", f"must be a valid metric name, got {record!r}")
        for key in ("for", "keep_firing_for", "annotations"):
            if key in rule:
                add(f"{path}.{key}", "only valid on alerting rules, not on recording rules")
    if alert is not None and (not isinstance(alert, str) or not alert):
        add(f"{path}.alert", f"must be a non-empty string, got {alert!r}")
    if "expr" not in rule:
        add(f"{path}.expr", "required")
    else:
        expr = rule["expr"]
        if isinstance(expr, bool) or not isinstance(expr, (str, int)):
            add(f"{path}.expr", f"must be a string (PromQL), got {_type_name(expr)}")
        elif isinstance(expr, str) and not expr.strip():
            add(f"{path}.expr", "must not be empty")
    for key in ("for", "keep_firing_for"):
        if key in rule:
            _check_field(rule[key], ("duration", None), f"{path}.{key}", add)
    if "labels" in rule:
        _check_field(rule["labels"], ("map", "labelvalue"), f"{path}.labels", add)
    if "annotations" in rule:
        _check_field(rule["annotations"], ("map", "str"), f"{path}.annotations", add)


def _check_object(value: dict[str, Any], spec: _Spec, path: str, add: Callable[[str, str], None]) -> None:
    for key, item in value.items():
        sub = f"{path}.{key}"
        if key not in spec:
            add(sub, "unknown field")
            continue
        _check_field(item, spec[key], sub, add)


def _check_field(value: Any, kind: tuple[str, Any], path: str, add: Callable[[str, str], None]) -> None:
    type_name, extra = kind
    got = _type_name(value)
    if type_name == "str":
        if not isinstance(value, str):
            add(path, f"must be a string, got {got}")
    elif type_name == "nonempty":
        if not isinstance(value, str) or not value:
            add(path, f"must be a non-empty string, got {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            add(path, f"must be a boolean, got {got}")
    elif type_name in ("int", "uint"):
        if isinstance(value, bool) or not isinstance(value, int):
            add(path, f"must be an integer, got {got}")
        elif type_name == "uint" and value < 0:
            add(path, f"must not be negative, got {value}")
    elif type_name == "intorstr":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            add(path, f"must be an integer or a string, got {got}")
    elif type_name == "enum":
        if value not in extra:
            add(path, f"must be one of {', '.join(extra)}; got {value!r}")
    elif type_name == "action":
        if not isinstance(value, str) or value.lower() not in _RELABEL_ACTIONS:
            add(path, f"must be a relabel action ({', '.join(_RELABEL_ACTIONS)}), got {value!r}")
    elif type_name == "pattern":
        if not isinstance(value, str) or not extra.match(value):
            add(path, f"must match {extra.pattern}, got {value!r}")
    elif type_name == "duration":
        if not isinstance(value, str):
            add(path, f"must be a Prometheus duration string (e.g. 30s, 1h30m), got {got}")
        elif not value or not PROMETHEUS_DURATION.match(value):
            add(path, f"{value!r} is not a Prometheus duration (e.g. 30s, 1h30m; units y w d h m s ms, in that order)")
    elif type_name == "obj":
        if not isinstance(value, dict):
            add(path, f"must be an object, got {got}")
        else:
            _check_object(value, extra, path, add)
            if extra is _SECRET_KEY_SELECTOR and "key" not in value:
                add(f"{path}.key", "required")
    elif type_name == "map":
        if not isinstance(value, dict):
            add(path, f"must be a map, got {got}")
            return
        for key, item in value.items():
            sub = f"{path}[{key!r}]"
            if not isinstance(key, str):
                add(sub, "map keys must be strings")
            if extra == "labelvalue":
                if isinstance(key, str) and not LABEL_NAME.match(key):
                    add(sub, "not a valid Prometheus label name")
                if not isinstance(item, str):
                    add(sub, f"must be a string, got {_type_name(item)}")
            elif extra == "str" and not isinstance(item, str):
                add(sub, f"must be a string, got {_type_name(item)}")
            elif extra == "list" and not isinstance(item, list):
                add(sub, f"must be a list, got {_type_name(item)}")
    elif type_name == "list":
        if not isinstance(value, list):
            add(path, f"must be a list, got {got}")
            return
        for i, item in enumerate(value):
            _check_list_item(item, extra, f"{path}[{i}]", add)
        if extra == "protocol" and len(set(map(str, value))) != len(value):
            add(path, "must not repeat a protocol")
    else:  # pragma: no cover - a typo in the tables above
        raise AssertionError(f"unknown field type {type_name}")


def _check_list_item(item: Any, extra: str, path: str, add: Callable[[str, str], None]) -> None:
    if extra == "str":
        _check_field(item, ("str", None), path, add)
    elif extra == "labelname":
        _check_field(item, ("pattern", LABEL_NAME), path, add)
    elif extra == "protocol":
        _check_field(item, ("enum", _SCRAPE_PROTOCOLS), path, add)
    elif extra == "endpoint":
        _check_field(item, ("obj", _ENDPOINT), path, add)
    elif extra == "relabel":
        _check_field(item, ("obj", _RELABEL_CONFIG), path, add)
        if isinstance(item, dict):
            action = item.get("action", "replace")
            if isinstance(action, str) and action.lower() in _RELABEL_NEEDS_TARGET and not item.get("targetLabel"):
                add(f"{path}.targetLabel", f"required for action {action!r}")
    elif extra == "requirement":
        if not isinstance(item, dict):
            add(path, f"must be an object, got {_type_name(item)}")
            return
        _check_object(item, {"key": ("str", None), "operator": ("enum", ("In", "NotIn", "Exists", "DoesNotExist")),
                             "values": ("list", "str")}, path, add)
        for required in ("key", "operator"):
            if required not in item:
                add(f"{path}.{required}", "required")
        values = _list(item.get("values"))
        if item.get("operator") in ("In", "NotIn") and not values:
            add(f"{path}.values", f"must not be empty for operator {item['operator']}")
        if item.get("operator") in ("Exists", "DoesNotExist") and values:
            add(f"{path}.values", f"must be empty for operator {item['operator']}")
    else:  # pragma: no cover
        raise AssertionError(f"unknown list item type {extra}")


def _duration_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value or not PROMETHEUS_DURATION.match(value):
        return None
    total = 0
    for amount, unit in re.findall(r"([0-9]+)(ms|y|w|d|h|m|s)", value):
        total += int(amount) * _DURATION_UNITS_MS[unit]
    return total


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
