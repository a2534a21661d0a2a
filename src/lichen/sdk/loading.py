"""Resolving ``module:attribute`` into the ASGI app one replica serves."""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from lichen.errors import ConfigError
from lichen.sdk.building import build_service_app
from lichen.sdk.services import Service
from lichen.sdk.settings import ReplicaSettings
from lichen.sdk.wrapping import ReplicaApp, wrap_asgi


def load_target(target: str, app_dir: str | Path | None = None, settings: ReplicaSettings | None = None) -> ReplicaApp:
    """Import ``module:attr`` (``app_dir`` goes first on ``sys.path``) and wrap it for serving.

    ``attr`` may be a :class:`~lichen.Service` subclass or instance, or any
    ASGI app (FastAPI, Starlette, ...); ``settings`` default to
    :meth:`ReplicaSettings.from_env`. Every failure is a one-line
    :class:`ConfigError`.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError("expected module:attribute, for example app.services:Recommender", where=target)
    if "/" in module_name or "\\" in module_name or module_name.endswith(".py"):
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise ConfigError(
            f"expected a module path, not a file path: try {dotted}:{attr} (with --app-dir set to the directory "
            "that holds its top-level package)",
            where=target,
        )
    directory = Path(app_dir) if app_dir is not None else Path.cwd()
    if not directory.is_dir():
        raise ConfigError(f"--app-dir {directory} is not a directory", where=target)
    directory_text = str(directory.resolve())
    if directory_text not in sys.path:
        sys.path.insert(0, directory_text)
    module = _import(module_name, target, directory_text)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"module {module_name!r} has no attribute {part!r}{hint}", where=target) from None
    if isinstance(obj, ReplicaApp):
        return obj
    if (isinstance(obj, type) and issubclass(obj, Service)) or isinstance(obj, Service):
        return build_service_app(obj, settings)
    if _is_asgi(obj):
        return wrap_asgi(obj, name=attr, settings=settings)
    if isinstance(obj, type):
        kind = f"class {obj.__qualname__}"
    else:
        name = type(obj).__name__
        kind = f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
    raise ConfigError(f"is {kind}, not a lichen Service subclass or an ASGI app", where=target)


def _import(module_name: str, target: str, directory: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(f"no module named {module_name!r} (searched --app-dir {directory} and sys.path)", where=target) from None
        raise ConfigError(f"importing {module_name!r} failed: {exc}", where=target) from exc
    except SyntaxError as exc:
        raise ConfigError(f"syntax error: {exc.msg}", where=f"{exc.filename}:{exc.lineno}") from exc
    except Exception as exc:
        raise ConfigError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}", where=target) from exc


def _is_asgi(obj: Any) -> bool:
    if isinstance(obj, type) or not callable(obj):
        return False
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(getattr(obj, "__call__", None))
