"""``lichen.__all__`` is the public API; changing it must be deliberate."""

from __future__ import annotations

import lichen

EXPECTED_PUBLIC_API = [
    "AppSpec",
    "ConfigError",
    "DataError",
    "LichenError",
    "ModelRegistry",
    "ModelVersion",
    "Service",
    "SpecError",
    "__version__",
    "atomic_output",
    "endpoint",
    "load_spec",
]


def test_public_api_is_locked() -> None:
    assert sorted(lichen.__all__) == sorted(EXPECTED_PUBLIC_API)


def test_every_public_name_resolves() -> None:
    for name in lichen.__all__:
        assert getattr(lichen, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError):
        lichen.DoesNotExist  # noqa: B018


def test_the_client_module_is_public_and_small() -> None:
    """``lichen.client`` (calling another service through the gateway) is a public module, like ``lichen.testing``."""
    import httpx

    import lichen.client

    assert sorted(lichen.client.__all__) == ["AsyncClient", "Client", "forwarded_headers", "service_url"]
    assert issubclass(lichen.client.Client, httpx.Client) and issubclass(lichen.client.AsyncClient, httpx.AsyncClient)
