"""An in-process client for testing a Service without starting a server.

``ServiceClient`` builds the same ASGI app ``lichen serve`` runs (built-ins,
limits, metrics, logs), runs ``setup()`` on entering, and is a Starlette
``TestClient`` otherwise::

    from lichen.testing import ServiceClient

    def test_recommend():
        with ServiceClient(Recommender) as client:
            response = client.post("/recommend", json={"user_id": 1})
            assert response.status_code == 200
            assert client.get("/readyz").status_code == 200
"""

from __future__ import annotations

import warnings
from typing import Any

from lichen.sdk.building import build_service_app
from lichen.sdk.services import Service
from lichen.sdk.wrapping import ReplicaApp, wrap_asgi

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2; httpx is what Lichen pins
    from starlette.testclient import TestClient


class ServiceClient(TestClient):
    """A ``TestClient`` for a Service class or instance (or any ASGI app), with setup run on ``with``.

    ``client.service`` is the Service instance; ``client.replica`` the
    :class:`~lichen.sdk.wrapping.ReplicaApp` (its ``state`` and ``metrics``).
    Entering raises whatever ``setup()`` raised, so a broken setup fails
    the test with its own error.
    """

    def __init__(self, target: type[Service] | Service | Any, *, setup_timeout_s: float = 60.0, **kwargs: Any) -> None:
        if isinstance(target, ReplicaApp):
            replica = target
        elif (isinstance(target, type) and issubclass(target, Service)) or isinstance(target, Service):
            replica = build_service_app(target)
        else:
            replica = wrap_asgi(target)
        self.replica = replica
        self.service = replica.service
        self.setup_timeout_s = setup_timeout_s
        kwargs.setdefault("raise_server_exceptions", False)
        super().__init__(replica, **kwargs)

    def __enter__(self) -> ServiceClient:
        super().__enter__()
        if not self.replica.setup_finished.wait(self.setup_timeout_s):
            self.__exit__(None, None, None)
            raise TimeoutError(f"setup() did not finish within {self.setup_timeout_s} s")
        error = self.replica.state.setup_error
        if error is not None:
            self.__exit__(None, None, None)
            raise error
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        if self.replica.executor is not None:
            self.replica.executor.shutdown(wait=False, cancel_futures=True)
