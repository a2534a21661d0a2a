"""Lichen: run AI microservices on one machine with production semantics.

The public API is ``lichen.__all__``; everything else is internal and may
change. Names are imported lazily so ``import lichen`` stays cheap for the
control plane and CLI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Service": "lichen.sdk.services",
    "endpoint": "lichen.sdk.endpoints",
    "AppSpec": "lichen.spec.models",
    "load_spec": "lichen.spec.loading",
    "LichenError": "lichen.errors",
    "SpecError": "lichen.errors",
    "DataError": "lichen.errors",
    "ConfigError": "lichen.errors",
    "atomic_output": "lichen.registry.artifacts",
    "ModelRegistry": "lichen.registry.models",
    "ModelVersion": "lichen.registry.models",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lichen' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    # lichen.registry names are resolved lazily only: import-linter counts these
    # imports, and lichen.sdk (a sibling of lichen.registry) imports lichen.
    from lichen.errors import ConfigError, DataError, LichenError, SpecError
    from lichen.sdk.endpoints import endpoint
    from lichen.sdk.services import Service
    from lichen.spec.loading import load_spec
    from lichen.spec.models import AppSpec
