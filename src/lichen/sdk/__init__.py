"""Writing services: the `Service` base class, the `@endpoint` decorator, the ASGI app that wraps a service with /healthz, /readyz, /metrics, limits, JSON logs and graceful shutdown, `serve` (one replica on uvicorn), and calling other services of the app through the gateway (`calling`, public as `lichen.client`).
"""
