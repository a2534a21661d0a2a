"""Writing services: the `Service` base class, the `@endpoint` decorator, the ASGI app that wraps a service with /healthz, /readyz, /metrics, limits, JSON logs and graceful shutdown, and `serve` (one replica on uvicorn).
"""
