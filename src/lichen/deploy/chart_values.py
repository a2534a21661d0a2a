"""Values a rendered manifest leaves to the chart: one object, two renderings.

A manifest is built once, as plain dicts, with :class:`Expr` leaves where a
Helm chart takes a value (``image.tag``, a service's replica count) or a
release field (``.Release.Namespace``). :func:`plain` turns it into what
``lichen render kubernetes`` writes (every ``Expr`` replaced by its default),
and :func:`helm_text` into a chart template (every ``Expr`` replaced by its
Go-template expression, every literal ``{{`` of the manifest escaped, so a
PromQL annotation such as ``{{ $labels.service }}`` reaches Prometheus
unchanged). The two renderings cannot drift apart: they are one object.

Objects that only some values enable carry a :class:`Condition`; plain
manifests keep them when the default enables them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Expr:
    """A leaf decided when the chart is installed: ``helm`` is its Go-template expression (without the braces),
    ``default`` what plain manifests get. ``block``: a mapping or list, rendered with ``toYaml``."""

    helm: str
    default: Any
    block: bool = False
    path: str | None = None
    """the chart value it reads (dotted), for values.yaml; None for release fields and computed expressions"""


def value_expr(path: str) -> str:
    """``index .Values "services" "my-api" "replicas"`` for ``services.my-api.replicas`` (names may hold ``-``)."""
    parts = " ".join(f'"{part}"' for part in path.split("."))
    return f"index .Values {parts}"


def value(path: str, default: Any, *, block: bool = False) -> Expr:
    """The chart value at ``path`` (dotted), with the default the chart's values.yaml gives it."""
    return Expr(value_expr(path), default, block=block, path=path)


def release_name(app: str) -> Expr:
    return Expr(".Release.Name", app)


def release_namespace(namespace: str) -> Expr:
    return Expr(".Release.Namespace", namespace)


@dataclass(frozen=True)
class Condition:
    """Render an object only when a value holds: is true (``equals`` None), equals ``equals``, or (``negate``)
    does not."""

    path: str
    equals: str | None = None
    negate: bool = False

    def helm(self) -> str:
        if self.equals is None:
            return f"{{{{- if {'not ' if self.negate else ''}({value_expr(self.path)}) }}}}"
        return f'{{{{- if {"ne" if self.negate else "eq"} ({value_expr(self.path)}) "{self.equals}" }}}}'

    def holds(self, values: dict[str, Any]) -> bool:
        """Whether it holds for these values (a nested mapping, as in values.yaml)."""
        found: Any = values
        for part in self.path.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        held = bool(found) if self.equals is None else found == self.equals
        return held != self.negate


@dataclass
class Manifest:
    """One object of the rendered output, the file it goes in, and the values that enable it."""

    file: str
    obj: dict[str, Any]
    when: tuple[Condition, ...] = ()


MERGE = "@@merge@@"
"""a mapping key whose value (a block :class:`Expr` of a mapping) is merged into that mapping: extra labels"""


def merged(expr: Expr) -> dict[str, Expr]:
    """``{**merged(value(...)), ...}`` in a mapping adds the value's keys to it (none by default)."""
    return {MERGE: expr}


def plain(node: Any) -> Any:
    """The manifest with every :class:`Expr` replaced by its default."""
    if isinstance(node, Expr):
        return plain(node.default)
    if isinstance(node, dict):
        out = {key: plain(item) for key, item in node.items() if key != MERGE}
        if MERGE in node:
            out.update(plain(node[MERGE]))
        return out
    if isinstance(node, list):
        return [plain(item) for item in node]
    return node


_TOKEN = re.compile(r"""(['"]?)@@LICHEN(\d+)@@\1""")
_BRACES = re.compile(r"\{\{|\}\}")


def _tokenise(node: Any, found: list[Expr]) -> Any:
    if isinstance(node, Expr):
        found.append(node)
        return f"@@LICHEN{len(found) - 1}@@"
    if isinstance(node, dict):
        return {key: _tokenise(item, found) for key, item in node.items()}
    if isinstance(node, list):
        return [_tokenise(item, found) for item in node]
    return node


_NUMBER_LIKE = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^0[xXoObB][0-9a-fA-F_]+$")


class _Dumper(yaml.SafeDumper):
    """Quotes every string another YAML reader could take for a number: PyYAML (YAML 1.1) writes ``1234e5`` bare,
    and Go's YAML (helm, kubectl) reads it as a float, so an image tag or a version like it would change type."""


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = '"' if _NUMBER_LIKE.match(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _string)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True)


def helm_text(obj: dict[str, Any]) -> str:
    """The object as the text of a chart template."""
    found: list[Expr] = []
    text = dump_yaml(_tokenise(obj, found))
    text = _BRACES.sub(lambda m: '{{ "{{" }}' if m.group() == "{{" else '{{ "}}" }}', text)
    lines = []
    for line in text.splitlines():
        match = _TOKEN.search(line)
        if match is None:
            lines.append(line)
            continue
        expr = found[int(match.group(2))]
        if line.lstrip().startswith(f"{MERGE}:") or line.lstrip().startswith(f"'{MERGE}':"):
            indent = len(line) - len(line.lstrip())
            lines.append(f"{{{{- with ({expr.helm}) }}}}")
            lines.append(f"{{{{- toYaml . | nindent {indent} }}}}")
            lines.append("{{- end }}")
            continue
        if expr.block:
            head = line[: match.start()].rstrip()
            indent = len(line) - len(line.lstrip()) + (4 if head.lstrip().startswith("- ") else 2)
            if head.lstrip() == "-":
                raise ValueError("a block value cannot be a bare list item")
            lines.append(head)
            lines.append(f"{{{{- toYaml ({expr.helm}) | nindent {indent} }}}}")
            continue
        rendered = f"{{{{ {expr.helm} }}}}" if not isinstance(expr.default, str) else f"{{{{ {expr.helm} | quote }}}}"
        lines.append(_TOKEN.sub(lambda _m: rendered, line, count=1))
        if _TOKEN.search(lines[-1]):
            raise ValueError(f"one line holds two chart values: {line!r}")
    return "\n".join(lines) + "\n"


def helm_document(manifest: Manifest) -> str:
    """A template file's text for one manifest, wrapped in its conditions."""
    text = helm_text(manifest.obj)
    for condition in reversed(manifest.when):
        text = f"{condition.helm()}\n{text}{{{{- end }}}}\n"
    return text


def collect_values(node: Any, into: dict[str, Any]) -> None:
    """Every chart value the manifest reads, with its default, into a nested mapping (values.yaml)."""
    if isinstance(node, Expr):
        if node.path is not None:
            set_path(into, node.path, node.default)
        return
    if isinstance(node, dict):
        for item in node.values():
            collect_values(item, into)
    elif isinstance(node, list):
        for item in node:
            collect_values(item, into)


def set_path(into: dict[str, Any], path: str, default: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        into = into.setdefault(part, {})
    into.setdefault(last, default)
