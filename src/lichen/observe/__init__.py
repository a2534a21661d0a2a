"""Observability: scraping, the embedded series store, PromQL evaluation, rule evaluation, notifications, SLO reports (``lichen slo``) and the dashboard's queries.
"""
