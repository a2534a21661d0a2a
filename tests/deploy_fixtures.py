"""Apps the chart tests render: one that uses every part of the renderer, and the reference recommender."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECSYS = REPO / "examples" / "recsys"

SHOP_SPEC = textwrap.dedent("""\
    app: shop
    services:
      api:
        entrypoint: shop.services:Api
        autoscale: {min: 2, max: 12, metric: cpu, target: 0.4, scale_down_stabilization_s: 120,
                    max_scale_up_rate: 3, max_scale_down_rate: 4, interval_s: 2}
        resources: {cpu: 0.5, memory: 512Mi}
        env: {FEATURE_FLAG: "on"}
        secrets: [DB_PASSWORD]
        routes: [{prefix: /v1/shop, host: shop.example.com}]
        probes:
          readiness: {period_s: 2, timeout_s: 0.5, failure_threshold: 4, success_threshold: 2, initial_delay_s: 1.5}
          liveness: {period_s: 3, failure_threshold: 5}
        termination_grace_s: 20
        rollout: {max_surge: 2, max_unavailable: 0, progress_deadline_s: 300}
        slo: {latency_ms: 120}
      ranker:
        entrypoint: shop.services:Ranker
        replicas: 3
        resources: {cpu: 1, memory: 1Gi}
        metrics_path: /internal/metrics
        rollout:
          strategy: canary
          steps: [5, 25, 100]
          analysis:
            interval_s: 15
            max_error_ratio: 0.02
            max_p95_ms: 250
            failure_limit: 2
            min_requests: 50
            queries:
              - {name: cache-misses, query: 'sum(rate(shop_cache_misses_total{service="$service",revision=~"$revision"}[$interval]))', max_ratio: 1.5}
              - {name: queue, query: 'max(shop_queue_depth{service="$service"})', max_value: 100}
    jobs:
      prepare:
        entrypoint: shop.jobs:prepare
        resources: {cpu: 1, memory: 1Gi}
      train:
        entrypoint: shop.jobs:train
        depends_on: [prepare]
        args: [--epochs, "3"]
        retries: 2
        timeout_s: 30m
        secrets: [DB_PASSWORD]
      report:
        entrypoint: shop.jobs:report
        depends_on: [train, prepare]
      nightly:
        entrypoint: shop.jobs:train
        schedule: "15 2 * * *"
        concurrency_policy: replace
        starting_deadline_s: 600
        successful_runs_kept: 5
        failed_runs_kept: 2
    gateway:
      auth: {jwt: {secret_env: JWT_KEY}}
      rate_limit: {per_ip_rps: 50, burst: 100}
    observability:
      rules: [rules/shop.yml]
    kubernetes: {namespace: shop, image_registry: registry.example.com/team, ingress_host: www.example.com}
    """)

SHOP_RULES = textwrap.dedent("""\
    groups:
      - name: shop
        rules:
          - alert: ShopQueueDeep
            expr: max by (service) (shop_queue_depth) > 100
            for: 2m
            labels: {severity: warning}
            annotations: {summary: "queue of {{ $labels.service }} is {{ $value }} deep"}
    """)


def write_shop(root: Path) -> Path:
    """The shop app in ``root`` (its code need not exist: rendering imports nothing)."""
    (root / "rules").mkdir(parents=True, exist_ok=True)
    (root / "rules" / "shop.yml").write_text(SHOP_RULES)
    (root / "lichen.yaml").write_text(SHOP_SPEC)
    return root
