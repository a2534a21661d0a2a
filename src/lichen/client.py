"""Calling another service of the app through the gateway: ``from lichen.client import Client``.

The public face of :mod:`lichen.sdk.calling` (see there and docs/sdk.md, "Calling another service"):
``Client("sentiment")`` is an ``httpx.Client`` whose base URL is the ``sentiment`` service on the
app's gateway and whose requests carry the ``X-Request-ID`` of the request being handled;
``AsyncClient`` is the async flavour.
"""

from __future__ import annotations

from lichen.sdk.calling import AsyncClient, Client, forwarded_headers, service_url

__all__ = ["AsyncClient", "Client", "forwarded_headers", "service_url"]
