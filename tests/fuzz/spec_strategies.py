"""Hypothesis strategies for ``lichen.yaml``: YAML-shaped data guided by the real schema, and YAML-ish text.

:func:`model_data` walks the pydantic models of :mod:`lichen.spec.models`, so every
key it writes is a real field (plus, now and then, a misspelt or unknown one),
and each value is either of the field's type (near its bounds, in its units) or
junk of another type. :func:`mutated` takes a real example's data and breaks one
place in it. :data:`yaml_text` writes text from YAML's own punctuation and the
schema's words, which reaches the parser's corners (anchors, tags, flow
collections, block scalars) far more often than random characters do.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

import yaml
from hypothesis import strategies as st
from pydantic import BaseModel, BeforeValidator

from lichen.spec.models import AppSpec

# ------------------------------------------------------------------ vocabulary


def _field_names(model: type[BaseModel], seen: set[type]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for info in model.model_fields.values():
        for member in _members(info.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names |= _field_names(member, seen)
    return names


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, dict, list):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


FIELD_NAMES = sorted(_field_names(AppSpec, set()))
NAMES = ["api", "web", "worker", "nightly", "a", "x-shared", "API", "no", "on", "1", "-bad", "a" * 64, "ünï"]

junk_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "~", "null", "yes", "0x1F", "1e400", ".inf", "-.nan", "1_000", "0o17", "12:30:00",
                     "2024-01-01", "500m", "1.5Gi", "30s", "5m", "1h", "25%", "*/5 * * * *", "/v1", "a:B", "\x00",
                     "\ud7ff", "${HOME}", "%", "{{ x }}"]),
)
junk = st.recursive(
    junk_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES + NAMES), st.text(max_size=6)),
                                            inner, max_size=3)),
    max_leaves=6,
)

_DURATIONS = ["0", "0s", "1s", "30s", "5m", "1h", "2d", "1w", "500ms", "1.5s", "-1s", "1y", "10", "9" * 30 + "h",
              "1h30m", "s", "1x", "P1D", "inf", "nan"]
_QUANTITIES = ["500m", "1", "0.25", "2", "0", "-1", "256Mi", "1Gi", "1G", "1e3", "10Ki", "1.5Gi", "999999Ei", "Mi",
               "1m", "0.0001", "1 Gi", "１Gi"]


def _number(kind: type, metadata: list[Any]) -> st.SearchStrategy[Any]:
    bounds = []
    for item in metadata:
        for attr in ("ge", "gt", "le", "lt"):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.extend([bound, bound - 1, bound + 1, bound - 0.5 if kind is float else bound])
    near = st.sampled_from(bounds) if bounds else st.nothing()
    plain = st.integers(-5, 10**6) if kind is int else st.floats(-1e6, 1e6, allow_nan=False)
    return st.one_of(near, plain, st.integers(-(2**64), 2**64))


def _for(annotation: Any, metadata: tuple[Any, ...] = ()) -> st.SearchStrategy[Any]:
    """Values for one annotation: mostly of its type, sometimes junk."""
    typed = _typed(annotation, list(metadata))
    return junk if typed is None else st.one_of(typed, typed, junk)


@functools.cache
def _model(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    optional = {name: _for(info.annotation, tuple(info.metadata)) for name, info in model.model_fields.items()}
    required = {name: optional.pop(name) for name, info in list(model.model_fields.items()) if info.is_required()}
    typo = st.sampled_from(list(model.model_fields)).map(lambda name: name[:-1] or "x")
    extra = st.dictionaries(st.one_of(typo, st.sampled_from(FIELD_NAMES)), junk, max_size=1)
    core = st.fixed_dictionaries({}, optional={**required, **optional})
    return st.one_of(core, core, core, st.builds(lambda a, b: {**a, **b}, core, extra))


def _typed(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        if any(isinstance(item, BeforeValidator) for item in extra):  # Duration, CpuCores, MemoryBytes, EnvValue
            return st.one_of(st.sampled_from(_DURATIONS + _QUANTITIES), _number(float, []), st.booleans())
        return _typed(base, metadata + [m for i in extra for m in (getattr(i, "metadata", None) or [i])])
    if origin in (typing.Union, types.UnionType):
        members = [s for arg in typing.get_args(annotation) if (s := _typed(arg, metadata)) is not None]
        return st.one_of(members) if members else None
    if origin is typing.Literal:
        values = list(typing.get_args(annotation))
        return st.one_of(st.sampled_from(values), st.sampled_from(values).map(lambda v: str(v).upper()))
    if origin is dict:
        value = typing.get_args(annotation)[1]
        return st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), _for(value), max_size=3)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return st.lists(_for(item), max_size=3)
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation in (int, float):
        return _number(annotation, metadata)
    if annotation is str:
        patterns = [m.pattern for m in metadata if getattr(m, "pattern", None)]
        words = st.sampled_from(NAMES + _DURATIONS + ["app.services:Api", "/v1/items", "/", "http://x", "sqlite:///s.db",
                                                      "20000-20999", "25%", "rules.yml", "missing.yml", "WORLD"])
        if patterns:
            return st.one_of(words, st.from_regex(patterns[0], fullmatch=True).map(lambda s: s[:80]))
        return st.one_of(words, st.text(max_size=20))
    return None


app_data = _model(AppSpec)
"""A whole spec as plain data: the real keys, values right or wrong."""

# ------------------------------------------------------------------ mutations


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _replace(data: Any, path: tuple, make: Any) -> Any:
    if not path:
        return make(data)
    head, *rest = path
    if isinstance(data, dict):
        return {k: (_replace(v, tuple(rest), make) if k == head else v) for k, v in data.items()}
    return [(_replace(v, tuple(rest), make) if i == head else v) for i, v in enumerate(data)]


_DELETE = object()


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not _DELETE}
    if isinstance(value, list):
        return [v for v in value if v is not _DELETE]
    return value


def _clean(value: Any) -> Any:
    value = _drop(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@st.composite
def mutated(draw: st.DrawFn, data: Any) -> Any:
    """``data`` with one to three places broken: a value replaced, a key removed, renamed or added."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        action = draw(st.sampled_from(["replace", "delete", "add", "rename", "wrap"]))
        if action == "replace":
            new = draw(st.one_of(junk, _for(str)))
            data = _replace(data, path, lambda _old, new=new: new)
        elif action == "delete" and path:
            data = _clean(_replace(data, path, lambda _old: _DELETE))
        elif action == "add":
            key, value = draw(st.sampled_from(FIELD_NAMES + NAMES)), draw(junk)
            data = _replace(data, path, lambda old, k=key, v=value: {**old, k: v} if isinstance(old, dict) else [old, v])
        elif action == "rename" and path and isinstance(path[-1], str):
            new_key = draw(st.sampled_from(FIELD_NAMES + NAMES))
            data = _replace(data, path[:-1], lambda old, k=path[-1], n=new_key: {(n if kk == k else kk): vv
                                                                                  for kk, vv in old.items()})
        elif action == "wrap":
            data = _replace(data, path, lambda old: [old])
    return data


def dump(data: Any, style: str | None = None, flow: bool | None = False) -> str:
    """YAML text of plain data (junk included: floats, big integers, odd strings)."""
    return yaml.safe_dump(data, default_style=style, default_flow_style=flow, allow_unicode=True, sort_keys=False)


# ------------------------------------------------------------------ YAML-ish text

_TOKENS = [
    "\n", "\n", "\n  ", "\n    ", " ", " ", ": ", ":", "- ", "-", "? ", "{", "}", "[", "]", ", ", "'", '"', "|", ">",
    "|-", "# c", "---\n", "...\n", "&a ", "*a", "<<: ", "<<: *a", "!!str ", "!!int ", "!!binary ", "!!set ",
    "!!omap ", "!!timestamp ", "!!python/object:os.system ", "!tag ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t",
    "\\", "\\x", "\ufeff", "\x00", "\x85", "\u2028", "é", "null", "~", "true", "no", "1", "0x10", "1e9", "-.inf",
    "2024-01-01", "0o7", "12:30", "500m", "256Mi", "5s", "app", "app: x", "services", "api", "entrypoint",
    "m:C", "routes", "/v1", "replicas", "jobs", "gateway", "observability", "rules", "x-base",
]
_STARTS = ["", "app: demo\n", "app: demo\nservices:\n  api:\n    entrypoint: m:C\n", "%YAML 1.2\n---\n"]

yaml_text = st.builds(
    lambda start, parts: start + "".join(parts),
    st.sampled_from(_STARTS),
    st.lists(st.one_of(st.sampled_from(_TOKENS), st.sampled_from(FIELD_NAMES), st.text(max_size=3)), max_size=40),
)
"""Text made of YAML's punctuation and the schema's words."""
