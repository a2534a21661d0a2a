"""Grafana dashboard JSON with the same queries as Lichen's own dashboard.

``grafana_dashboard(app_name)`` returns a dashboard for Grafana's import
(Dashboards → New → Import): one time-series panel per entry of
``lichen.observe.dashboard.PANELS`` (identical PromQL), an alert list, and a
table of the ``ALERTS`` series. The data source is an import input,
``DS_PROMETHEUS``: point it at Lichen's query API (Lichen serves Prometheus'
HTTP API, so Grafana's Prometheus data source works) or at a Prometheus that
scrapes Lichen's ``/federate``. A ``service`` variable filters every panel.
"""

from __future__ import annotations

import re
from typing import Any

from lichen.observe.dashboard import PANELS, Panel

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SCHEMA_VERSION = 39


_SELECTOR = re.compile(r"\b(lichen_[a-z0-9_]+)(\{)?")


def with_service_filter(expr: str) -> str:
    """Add ``service=~"$service"`` to every selector of a Lichen metric (``lichen_*``)."""

    def add(match: re.Match[str]) -> str:
        if match.group(2):
            return f'{match.group(1)}{{service=~"$service",'
        return f'{match.group(1)}{{service=~"$service"}}'

    return _SELECTOR.sub(add, expr)


def _timeseries(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": {"lineWidth": 1, "fillOpacity": 5}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": with_service_filter(q.expr),
                "legendFormat": q.legend,
                "range": True,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def grafana_dashboard(app_name: str, *, refresh: str = "10s") -> dict[str, Any]:
    """The dashboard document, wrapped for import with its ``__inputs``."""
    panels: list[dict[str, Any]] = []
    for i, panel in enumerate(PANELS):
        panels.append(_timeseries(panel, i + 1, x=(i % 2) * 12, y=(i // 2) * 8))
    y = ((len(PANELS) + 1) // 2) * 8
    panels.append(
        {
            "id": len(panels) + 1,
            "type": "table",
            "title": "Alerts (ALERTS series)",
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 24, "x": 0, "y": y},
            "targets": [
                {
                    "refId": "A",
                    "datasource": DATASOURCE,
                    "expr": 'ALERTS{service=~"$service"}',
                    "format": "table",
                    "instant": True,
                }
            ],
            "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}],
        }
    )
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus (Lichen)",
                "description": "Lichen's query API or a Prometheus scraping Lichen's /federate",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
        ],
        "uid": f"lichen-{app_name}"[:40],
        "title": f"Lichen · {app_name}",
        "tags": ["lichen", app_name],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": refresh,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "service",
                    "label": "service",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(lichen_requests_total, service)", "refId": "service"},
                    "definition": "label_values(lichen_requests_total, service)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "refresh": 2,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
