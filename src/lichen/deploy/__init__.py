"""Rendering a spec for Kubernetes: OCI images, Helm chart, HPA, ServiceMonitor/PrometheusRule and Grafana dashboards.
"""
