"""The ``@endpoint`` decorator and the endpoint declarations it records.

A decorated method keeps working as a plain method (so it stays easy to unit
test); the decorator only attaches an :class:`EndpointSpec` that
:mod:`lichen.sdk.building` turns into a FastAPI route with limits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from lichen.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# RFC 9110 section 9.2.2: these methods are idempotent by definition.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_ATTRIBUTE = "__lichen_endpoint__"


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as declared by ``@endpoint``; ``None`` means "use the replica default"."""

    path: str
    method: str
    timeout_s: float | None
    max_concurrency: int | None
    idempotent: bool
    stream: bool
    name: str = ""

    def resolved(self, default_timeout_s: float, default_max_concurrency: int) -> EndpointSpec:
        """This endpoint with the replica defaults filled in."""
        return EndpointSpec(
            path=self.path,
            method=self.method,
            timeout_s=self.timeout_s if self.timeout_s is not None else default_timeout_s,
            max_concurrency=self.max_concurrency if self.max_concurrency is not None else default_max_concurrency,
            idempotent=self.idempotent,
            stream=self.stream,
            name=self.name,
        )

    def describe(self) -> dict[str, Any]:
        """The entry ``GET /.well-known/lichen`` lists for this endpoint."""
        data = asdict(self)
        data.pop("name")
        return data


def endpoint(
    path: str,
    method: str = "POST",
    *,
    timeout_s: float | None = None,
    max_concurrency: int | None = None,
    idempotent: bool | None = None,
    stream: bool = False,
) -> Callable[[F], F]:
    """Declare a :class:`~lichen.Service` method as an HTTP endpoint.

    ``timeout_s`` (a 504 past it) and ``max_concurrency`` (a 503 with
    ``Retry-After`` past it) default to the service's ``timeout_s`` and
    ``max_concurrency`` from ``lichen.yaml`` (``ReplicaSettings.timeout_s``
    and ``max_concurrency``, env ``LICHEN_TIMEOUT_S`` and
    ``LICHEN_MAX_CONCURRENCY``), or 30 s and 64. ``idempotent`` tells the
    gateway a POST may be retried; it defaults to the method's HTTP semantics
    (GET, HEAD, OPTIONS, PUT, DELETE are idempotent). ``stream=True`` sends
    what the handler yields as Server-Sent Events; a generator handler
    (``def``/``async def`` with ``yield``) streams without it.

    Example::

        @endpoint("/recommend", method="POST", timeout_s=2, max_concurrency=64)
        def recommend(self, req: RecRequest) -> RecResponse: ...
    """
    where = f"@endpoint({path!r})"
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"path must start with '/', got {path!r}", where=where)
    verb = str(method).upper()
    if verb not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}", where=where)
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf
    ):
        raise ConfigError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}", where=where)
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}", where=where)
    reserved = {"/healthz", "/readyz", "/metrics", "/.well-known/lichen", "/openapi.json"}
    if path in reserved:
        raise ConfigError(f"{path} is a built-in endpoint of every service", where=where)

    def decorate(func: F) -> F:
        spec = EndpointSpec(
            path=path,
            method=verb,
            timeout_s=float(timeout_s) if timeout_s is not None else None,
            max_concurrency=max_concurrency,
            idempotent=bool(idempotent) if idempotent is not None else verb in IDEMPOTENT_METHODS,
            # A generator handler can only mean a stream: yielding is how a stream handler answers.
            stream=bool(stream) or inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func),
            name=getattr(func, "__name__", ""),
        )
        setattr(func, _ATTRIBUTE, spec)
        return func

    return decorate


def declared_endpoints(cls: type) -> list[tuple[str, EndpointSpec]]:
    """``(attribute name, spec)`` for every ``@endpoint`` method of ``cls``, in definition order.

    Raises :class:`ConfigError` when two methods claim the same method and path.
    """
    found: dict[str, EndpointSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            spec = getattr(value, _ATTRIBUTE, None)
            if isinstance(spec, EndpointSpec):
                found[attr] = spec
            elif attr in found and callable(value):
                del found[attr]  # overridden without @endpoint
    seen: dict[tuple[str, str], str] = {}
    for attr, spec in found.items():
        key = (spec.method, spec.path)
        if key in seen:
            raise ConfigError(
                f"{spec.method} {spec.path} is declared by both {seen[key]}() and {attr}()",
                where=f"{cls.__module__}.{cls.__qualname__}",
            )
        seen[key] = attr
    return list(found.items())
