"""What every ``lichen.yaml`` model shares: the strict base model, name patterns and value types."""

from __future__ import annotations

import types
import typing
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ENTRYPOINT_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
ROUTE_PREFIX_PATTERN = r"^/[^\s?#]*$"  # a URL path: no spaces, no query, no fragment
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
Entrypoint = Annotated[str, Field(pattern=ENTRYPOINT_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
Percent = Annotated[str, Field(pattern=r"^\d{1,3}%$")]


def _env_value(value: object) -> object:
    # YAML reads `WORKERS: 4` as a number; an environment only holds strings.
    if isinstance(value, bool):
        raise ValueError(f"expected a string, got {str(value).lower()}: quote it, e.g. \"{str(value).lower()}\"")
    if isinstance(value, (int, float)):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value)]


def _positive(value: float) -> float:
    """A period or interval: 0 would make its loop spin."""
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _plain_number_kinds(annotation: object) -> set[type]:
    """The plain ``int``/``float``/``bool`` members of a field's annotation (Annotated/Optional/Union opened).

    A member with its own parser (a ``BeforeValidator`` such as ``Duration``)
    is left out: it already says what it expects.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        if any(isinstance(item, BeforeValidator) for item in extra):
            return set()
        return _plain_number_kinds(base)
    if origin in (typing.Union, types.UnionType):
        return {kind for arg in typing.get_args(annotation) for kind in _plain_number_kinds(arg)}
    return {annotation} & {int, float, bool}  # type: ignore[arg-type]


def _is_block(model: type[BaseModel], name: str) -> bool:
    """Whether a field is a section, mapping or list that has a default (so null can mean "the default")."""
    field = model.model_fields[name]
    if field.is_required():
        return False
    kind = typing.get_origin(field.annotation) or field.annotation
    return kind in (dict, list) or (isinstance(kind, type) and issubclass(kind, BaseModel))


class SpecModel(BaseModel):
    """Base: unknown keys are errors, models are immutable, numbers are finite.

    YAML 1.1 reads ``yes``/``no``/``on``/``off`` as booleans and pydantic would
    take ``true`` as the number 1, so ``replicas: yes`` is refused instead of
    silently meaning one replica.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_blocks_are_defaults(cls, data: object) -> object:
        # `resources:` or `env:` with every line under it commented out is YAML null: use the default.
        if isinstance(data, dict) and any(v is None for v in data.values()):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields and _is_block(cls, k))}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields[info.field_name]
            own_parser = any(isinstance(item, BeforeValidator) for item in field.metadata)
            kinds = set() if own_parser else _plain_number_kinds(field.annotation)
            if kinds and bool not in kinds:
                wanted = "an integer" if int in kinds else "a number"
                raise ValueError(
                    f"expected {wanted}, got {str(value).lower()} (YAML reads yes/no/on/off as true/false)"
                )
        return value
