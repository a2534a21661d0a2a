"""What the gateway answers itself: its metrics (text format, or OpenMetrics with exemplars when the scraper
asks for it), ``/-/healthz``, ``/-/routes`` and ``/-/config``."""

from __future__ import annotations

import json
from typing import Any

from lichen.gateway.configs import GatewayConfig
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.requests import Request
from lichen.gateway.responses import Responder

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"


def answer_builtin(request: Request, responder: Responder, path: str, request_id: str, config: GatewayConfig,
                   metrics: GatewayMetrics, route_listing: list[Any]) -> None:
    if path == config.metrics_path:
        accept = next((value for name, value in request.headers if name == b"accept"), b"")
        openmetrics = b"application/openmetrics-text" in accept  # what carries exemplars (Prometheus asks)
        responder.send_simple(200, "", request_id, body=metrics.exposition(openmetrics),
                              content_type=OPENMETRICS_TYPE if openmetrics else PROMETHEUS_TYPE)
    elif path == "/-/healthz":
        responder.send_simple(200, "", request_id, body=b'{"status":"ok"}')
    elif path == "/-/routes":
        responder.send_simple(200, "", request_id, body=json.dumps({"routes": route_listing}).encode())
    elif path == "/-/config":
        responder.send_simple(200, "", request_id, body=json.dumps({"generation": config.generation}).encode())
    else:
        responder.send_simple(404, f"no route matches {path[:200]}", request_id, extra={"routes": route_listing})
