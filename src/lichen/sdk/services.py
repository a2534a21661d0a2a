"""The :class:`Service` base class users subclass to write a microservice."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


class Service:
    """Base class for a Lichen microservice; one instance per replica.

    Subclass it, declare endpoints with :func:`lichen.endpoint`, and run it
    with ``lichen serve module:Class --port 8000``::

        class Recommender(Service):
            def setup(self):              # once per replica, before it reports ready
                self.model = load_model()

            @endpoint("/recommend", method="POST", timeout_s=2, max_concurrency=64)
            def recommend(self, req: RecRequest) -> RecResponse: ...

    Lifecycle: ``__init__`` runs at import time of the replica and must be
    cheap; ``setup()`` runs once in a worker thread after the server listens
    (``/readyz`` answers 503 until it returns; if it raises, the replica
    exits non-zero); ``ready()`` is asked on every readiness probe after
    that; ``teardown()`` runs once after in-flight requests drained.
    """

    def __init__(self) -> None:
        self._lichen_metrics = CollectorRegistry(auto_describe=True)

    @property
    def metrics(self) -> CollectorRegistry:
        """This replica's Prometheus registry, served at ``/metrics``.

        Register your own metrics on it instead of the global registry::

            self.hits = Counter("cache_hits_total", "Cache hits.", registry=self.metrics)
        """
        registry = self.__dict__.get("_lichen_metrics")
        if registry is None:  # a subclass __init__ that skipped super().__init__()
            registry = self.__dict__["_lichen_metrics"] = CollectorRegistry(auto_describe=True)
        return registry

    def setup(self) -> None:
        """Load models and open connections; runs once before the replica is ready."""

    def ready(self) -> bool:
        """Whether this replica can take traffic now (after ``setup()``); keep it cheap."""
        return True

    def teardown(self) -> None:
        """Release resources; runs once after in-flight requests finished at shutdown."""
