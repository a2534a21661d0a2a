"""The control-plane HTTP API (FastAPI on loopback, bearer token) and its client.
"""
