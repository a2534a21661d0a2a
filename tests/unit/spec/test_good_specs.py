"""Valid specs load, defaults follow Kubernetes, and loading is deterministic."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lichen.errors import ConfigError, SpecError
from lichen.spec.loading import load_spec, validate_spec
from lichen.spec.models import AppSpec, canonical_json, spec_revision

ISSUE_SKETCH = """\
app: recsys
services:
  recommender:
    entrypoint: recsys.services:Recommender
    replicas: 2
    resources: {cpu: 1, memory: 1Gi, gpu: 0}
    env: {MODEL_DIR: ./models, WORKERS: 4}
    secrets: [REDIS_PASSWORD]
    routes: [/v1/recommendations]
    timeout_s: 2
    max_concurrency: 64
    probes: {readiness: {period_s: 2, failure_threshold: 3}, liveness: {period_s: 5}}
    rollout: {strategy: canary, steps: [10, 50, 100], analysis: {max_error_ratio: 0.01, max_p95_ms: 50, interval_s: 10}}
jobs:
  features: {entrypoint: recsys.jobs:features}
  train: {entrypoint: recsys.jobs:train, depends_on: [features], schedule: "0 3 * * *", carbon_aware: {deadline: 6h}}
gateway: {port: 8080, auth: {api_keys: true}, rate_limit: {per_key_rps: 100}}
observability: {scrape_interval_s: 5, rules: [alerts.yaml], receivers: [{webhook: "http://127.0.0.1:9000/hook"}]}
sustainability: {region: DE, pue: 1.2}
state: {url: sqlite:///.lichen/state.db}
"""


def _write(tmp_path: Path, text: str, name: str = "lichen.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_issue_sketch_loads_with_parsed_quantities(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, ISSUE_SKETCH))
    rec = spec.services["recommender"]
    assert rec.replicas == 2
    assert rec.resources.memory == 1024**3 and rec.resources.cpu == 1.0
    assert rec.env == {"MODEL_DIR": "./models", "WORKERS": "4"}
    assert rec.routes[0].prefix == "/v1/recommendations"
    assert rec.probes.readiness.period_s == 2 and rec.probes.readiness.path == "/readyz"
    assert rec.probes.liveness.period_s == 5 and rec.probes.liveness.path == "/healthz"
    assert rec.rollout.analysis.max_p95_ms == 50
    assert spec.jobs["train"].carbon_aware is not None and spec.jobs["train"].carbon_aware.deadline == 6 * 3600
    assert spec.gateway.rate_limit.per_key_rps == 100
    assert spec.observability.receivers[0].webhook == "http://127.0.0.1:9000/hook"


def test_minimal_spec_gets_kubernetes_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "app: tiny\nservices:\n  api: {entrypoint: 'tiny.app:Api'}\n"))
    api = spec.services["api"]
    assert api.probes.readiness.failure_threshold == 3 and api.probes.readiness.success_threshold == 1
    assert api.rollout.max_surge == "25%" and api.rollout.max_unavailable == "25%"
    assert api.termination_grace_s == 30.0
    assert (api.restart.initial_backoff_s, api.restart.max_backoff_s, api.restart.reset_after_s) == (10, 300, 600)
    assert spec.gateway.port == 8080 and spec.jobs == {}


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "app: tiny\nservices:\njobs:\ngateway:\n"))
    assert spec.services == {} and spec.jobs == {} and spec.gateway.port == 8080


def test_autoscale_alone_is_fine_and_replicas_keep_default(tmp_path: Path) -> None:
    text = "app: a\nservices:\n  s:\n    entrypoint: m:C\n    autoscale: {min: 2, max: 2}\n"
    spec = load_spec(_write(tmp_path, text))
    assert spec.services["s"].autoscale is not None and spec.services["s"].autoscale.max == 2


def test_same_prefix_on_distinct_hosts_or_headers_is_not_a_duplicate(tmp_path: Path) -> None:
    text = """\
    app: a
    services:
      blue:
        entrypoint: m:C
        routes: [{prefix: /v1, headers: {x-variant: blue}}, {prefix: /v1, host: b.example}]
      green:
        entrypoint: m:C
        routes: [{prefix: /v1, headers: {x-variant: green}}, /v1]
    """
    assert validate_spec(_write(tmp_path, text), check_imports=False) == []


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    text = """\
    app: a
    services:
      one: &base
        entrypoint: m:C
        resources: {memory: 256Mi}
      two:
        <<: *base
        replicas: 3
    """
    spec = load_spec(_write(tmp_path, text))
    assert spec.services["two"].resources.memory == 256 * 1024**2 and spec.services["two"].replicas == 3


def test_entrypoints_import_from_the_spec_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "shopapp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "services.py").write_text(
        "from lichen import Service, endpoint\n\n"
        "class Api(Service):\n    @endpoint('/x')\n    def x(self) -> int:\n        return 1\n\n"
        "def nightly():\n    return 1\n"
    )
    (tmp_path / "alerts.yaml").write_text("groups: []\n")
    text = """\
    app: shop
    services: {api: {entrypoint: 'shopapp.services:Api'}}
    jobs: {nightly: {entrypoint: 'shopapp.services:nightly'}}
    observability: {rules: [alerts.yaml]}
    """
    before = set(sys.modules)
    assert validate_spec(_write(tmp_path, text)) == []
    assert "shopapp" not in sys.modules and "shopapp.services" not in set(sys.modules) - before
    assert str(tmp_path) not in sys.path


def test_a_preloaded_module_of_the_same_name_does_not_shadow_the_app(tmp_path: Path) -> None:
    # 'json' is already imported from the standard library; the app has its own.
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text("")
    (tmp_path / "json" / "svc.py").write_text("async def Api(scope, receive, send):\n    pass\n")  # an ASGI app
    import json

    path = _write(tmp_path, "app: a\nservices: {api: {entrypoint: 'json.svc:Api'}}\n")
    assert validate_spec(path) == []
    assert sys.modules["json"] is json and "json.svc" not in sys.modules


def test_canonical_json_and_revision_are_stable(tmp_path: Path) -> None:
    one = load_spec(_write(tmp_path, "app: a\nservices: {s: {entrypoint: 'm:C', replicas: 2}}\n", "one.yaml"))
    two = load_spec(_write(tmp_path, "services:\n  s:\n    replicas: 2\n    entrypoint: m:C\napp: a\n", "two.yaml"))
    three = load_spec(_write(tmp_path, "app: a\nservices: {s: {entrypoint: 'm:C', replicas: 3}}\n", "three.yaml"))
    assert canonical_json(one) == canonical_json(two)
    assert spec_revision(one) == spec_revision(two) != spec_revision(three)
    assert AppSpec.model_validate_json(canonical_json(one)) == one


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no spec file at"):
        load_spec(tmp_path / "nope.yaml")


def test_empty_file_is_one_issue(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, "# nothing here\n"))
    assert len(caught.value.issues) == 1 and "got an empty file" in caught.value.issues[0].message
