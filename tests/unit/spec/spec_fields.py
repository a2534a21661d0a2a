"""Walk the spec models: every dotted field path with its effective default, rendered as docs/spec.md writes it.

Conventions (docs/spec.md explains them to readers): a mapping of named
items is written ``<name>``, a list of items ``[]``; ``required`` marks a
field without a default; a section (a nested model) has no rendered default.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lichen.spec.loading import _unwrap
from lichen.spec.models import AppSpec
from lichen.spec.quantities import format_duration, format_memory_bytes, parse_duration_s, parse_memory_bytes

SECTION = object()  # a nested model with a default: documented by its own rows
REQUIRED = object()


@dataclass(frozen=True)
class FieldDoc:
    path: str
    default: Any  # REQUIRED, SECTION or the rendered default text


def _validators(info: FieldInfo) -> set[Any]:
    found = set()
    for item in info.metadata:
        func = getattr(item, "func", None)
        if func is not None:
            found.add(func)
    for member in typing.get_args(info.annotation) or ():
        if typing.get_origin(member) is typing.Annotated:
            for meta in typing.get_args(member)[1:]:
                if getattr(meta, "func", None) is not None:
                    found.add(meta.func)
    return found


def render(value: Any, name: str, info: FieldInfo) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    kinds = _validators(info)
    if parse_duration_s in kinds and not name.endswith("_s"):
        return format_duration(value)
    if parse_memory_bytes in kinds:
        return format_memory_bytes(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(v, name, info) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render(v, name, info)}" for k, v in value.items()) + "}"
    return str(value)


def _models_in(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """(suffix, model) for the models reachable from one annotation."""
    found: list[tuple[str, type[BaseModel]]] = []
    for tp in _unwrap(annotation):
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found.append(("", tp))
        elif origin is dict:
            found += [(".<name>" + s, m) for s, m in _models_in(typing.get_args(tp)[1])]
        elif origin is list:
            found += [("[]" + s, m) for s, m in _models_in(typing.get_args(tp)[0])]
    return found


def spec_fields(model: type[BaseModel] = AppSpec, prefix: str = "", instance: BaseModel | None = None) -> list[FieldDoc]:
    out: list[FieldDoc] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _models_in(info.annotation)
        if info.is_required() and instance is None:
            default: Any = REQUIRED
        else:
            value = getattr(instance, name) if instance is not None else info.get_default(call_default_factory=True)
            default = SECTION if isinstance(value, BaseModel) else render(value, name, info)
        out.append(FieldDoc(path, default))
        for suffix, child in nested:
            child_instance = None
            if not suffix and default is SECTION:
                child_instance = getattr(instance, name) if instance is not None else info.get_default(
                    call_default_factory=True
                )
            out += spec_fields(child, f"{path}{suffix}.", child_instance)
    return out
