"""Observability: scraping, the embedded series store, PromQL evaluation, rule evaluation, notifications and the dashboard's queries.
"""
