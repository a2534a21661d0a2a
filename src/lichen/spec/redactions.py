"""The ``observability.redact`` entries of ``lichen.yaml``: fields hashed or dropped in every log line.

What the rules do is :mod:`lichen.redacting`; this module is their schema and the checks that locate a bad
entry at ``observability.redact``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lichen.redacting import FIELD_PATTERN as REDACT_FIELD_PATTERN
from lichen.redacting import LOCATIONS as REDACT_LOCATIONS
from lichen.redacting import line_field_error
from lichen.spec.bases import SpecModel


class RedactFieldSpec(SpecModel):
    """A field hashed with the app's salt, or dropped, in every log line (lichen.redacting); a bare string is a
    field hashed wherever it is found."""

    field: Annotated[str, Field(pattern=REDACT_FIELD_PATTERN)]
    where: list[Literal["body", "query", "header"]] = Field(default_factory=lambda: list(REDACT_LOCATIONS),
                                                           min_length=1)
    action: Literal["hash", "drop"] = "hash"

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: object) -> object:
        return {"field": data} if isinstance(data, str) else data

    @field_validator("field")
    @classmethod
    def _not_a_line_field(cls, name: str) -> str:
        """Not a field the SDK's or the gateway's request lines write (lichen.redacting.LINE_FIELDS)."""
        reserved = line_field_error(name)
        if reserved:
            raise ValueError(reserved)
        return name


def one_entry_per_field(entries: list[RedactFieldSpec]) -> list[RedactFieldSpec]:
    """``observability.redact`` names each field once (``user-id`` and ``user_id`` are one field)."""
    names = [e.field.lower().replace("-", "_") for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{', '.join(dupes)}: listed twice (one entry per field; '-' and '_' match alike)")
    return entries


def redact_rules(entries: list[RedactFieldSpec]) -> tuple[tuple[str, str, str], ...]:
    """The entries as ``(action, where, field)`` rules (:func:`lichen.redacting.rules_text` writes them)."""
    return tuple((entry.action, where, entry.field) for entry in entries for where in entry.where)
