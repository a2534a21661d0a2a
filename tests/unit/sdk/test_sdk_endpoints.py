"""The @endpoint decorator and endpoint discovery."""

from __future__ import annotations

import pytest

from lichen import Service, endpoint
from lichen.errors import ConfigError
from lichen.sdk.endpoints import EndpointSpec, declared_endpoints


def test_the_decorator_records_a_spec_and_leaves_the_method_callable() -> None:
    class Svc(Service):
        @endpoint("/add", timeout_s=2, max_concurrency=3)
        def add(self, a: int, b: int) -> int:
            return a + b

    assert Svc().add(2, 3) == 5
    [(attr, spec)] = declared_endpoints(Svc)
    assert attr == "add"
    assert spec == EndpointSpec("/add", "POST", 2.0, 3, idempotent=False, stream=False, name="add")


@pytest.mark.parametrize(
    ("method", "idempotent", "expected"),
    [("GET", None, True), ("PUT", None, True), ("DELETE", None, True), ("POST", None, False),
     ("PATCH", None, False), ("POST", True, True), ("GET", False, False)],
)
def test_idempotent_defaults_to_http_semantics(method: str, idempotent: bool | None, expected: bool) -> None:
    @endpoint("/x", method=method, idempotent=idempotent)
    def handler(self: object) -> None: ...

    assert handler.__lichen_endpoint__.idempotent is expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "no-slash"}, "path must start with '/'"),
        ({"path": "/x", "method": "FETCH"}, "method must be one of"),
        ({"path": "/x", "timeout_s": 0}, "timeout_s must be a number of seconds > 0"),
        ({"path": "/x", "timeout_s": "2"}, "timeout_s must be a number of seconds > 0"),
        ({"path": "/x", "timeout_s": True}, "timeout_s must be a number of seconds > 0"),
        ({"path": "/x", "timeout_s": float("nan")}, "timeout_s must be a number of seconds > 0"),
        ({"path": "/x", "timeout_s": float("inf")}, "timeout_s must be a number of seconds > 0"),
        ({"path": "/x", "max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
        ({"path": "/x", "max_concurrency": True}, "max_concurrency must be an integer >= 1"),
        ({"path": "/metrics"}, "built-in endpoint"),
    ],
)
def test_bad_declarations_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        endpoint(**kwargs)
    assert "@endpoint(" in str(caught.value)


def test_discovery_follows_inheritance_and_overrides() -> None:
    class Base(Service):
        @endpoint("/a", method="GET")
        def a(self) -> dict:
            return {}

        @endpoint("/b", method="GET")
        def b(self) -> dict:
            return {}

    class Child(Base):
        def b(self) -> dict:  # overridden without @endpoint: no longer an endpoint
            return {}

        @endpoint("/c")
        def c(self) -> dict:
            return {}

    assert [attr for attr, _ in declared_endpoints(Child)] == ["a", "c"]


def test_two_methods_on_one_route_are_an_error() -> None:
    class Twice(Service):
        @endpoint("/same")
        def one(self) -> None: ...

        @endpoint("/same")
        def two(self) -> None: ...

    with pytest.raises(ConfigError, match=r"POST /same is declared by both one\(\) and two\(\)"):
        declared_endpoints(Twice)
