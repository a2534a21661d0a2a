"""A parsed ``lichen.yaml`` that remembers where everything is written.

:func:`parse_document` composes the YAML into nodes so each key and value keeps
its line and column, and returns a :class:`Document`: the plain data plus those
positions, so any check can report a problem at ``file:line:column`` with its
:func:`dotted` field path. Schema validation (:mod:`lichen.spec.loading`),
cross-field checks (:mod:`lichen.spec.checking`) and the designed-but-unbuilt
warnings (:mod:`lichen.spec.unbuilt_fields`) all read documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from lichen.errors import SpecIssue

PathKey = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    """A parsed spec file: its plain data and where each path sits in the text."""

    file: str
    data: Any
    # path -> (line, column) of the mapping key (or the list item), 1-based.
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    # path -> (line, column) of the value, 1-based.
    value_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: PathKey, *, value: bool = False) -> tuple[int, int]:
        """Where ``path`` is written; the nearest written ancestor when it is absent."""
        table = self.value_positions if value else self.key_positions
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in table:
                return table[prefix]
            if prefix in self.key_positions:
                return self.key_positions[prefix]
            if prefix in self.value_positions:
                return self.value_positions[prefix]
        return (1, 1)

    def issue(self, path: PathKey, message: str, *, value: bool = False, severity: str = "error") -> SpecIssue:
        line, column = self.position(path, value=value)
        return SpecIssue(self.file, line, column, dotted(path), message, severity)


def dotted(path: PathKey) -> str:
    """``("services", "api", "routes", 0)`` -> ``services.api.routes[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_CONSTRUCTOR_FAILURES = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


class LocatingSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a scalar it cannot build is a located ``ConstructorError``.

    SafeLoader raises bare ``ValueError``/``IndexError``/... for a value its own
    resolver tagged (``2024-02-30`` is a timestamp, ``0x_`` an integer) or a
    tag written by hand (``!!int ""``); here each becomes a ``MarkedYAMLError``
    at that value, which callers already report at ``file:line:column``.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCTOR_FAILURES as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            shown = repr(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            # a date's own reason says what is wrong ("month must be in 1..12"); the others' are internal
            why = f" ({exc})" if kind == "timestamp" and isinstance(exc, ValueError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {kind}{why}; quote it to keep it as text", node.start_mark
            ) from None


def parse_document(text: str, file: str) -> tuple[Document | None, list[SpecIssue]]:
    """Parse YAML keeping positions; duplicate keys are issues, invalid YAML is one issue."""
    try:
        loader = LocatingSafeLoader(text)  # refuses control characters here, before parsing
    except yaml.reader.ReaderError as exc:
        return None, [_unreadable(exc, text, file)]
    try:
        node = loader.get_single_node()
        issues: list[SpecIssue] = []
        doc = Document(file=file, data=None)
        if node is not None:
            _index(node, (), doc, issues, loader)
            doc.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "cannot parse"
        if exc.context and exc.problem and exc.context_mark:
            problem = f"{exc.context} (line {exc.context_mark.line + 1}), {exc.problem}"
        return None, [SpecIssue(file, line, column, "", f"invalid YAML: {problem}")]
    except _AliasError as exc:
        return None, [SpecIssue(file, exc.line, exc.column, "", f"invalid YAML: {exc}")]
    except RecursionError:  # PyYAML composes nested collections recursively
        mark = loader.get_mark()
        message = f"invalid YAML: nested more than {_MAX_DEPTH} levels deep"
        return None, [SpecIssue(file, mark.line + 1, mark.column + 1, "", message)]
    except yaml.reader.ReaderError as exc:
        return None, [_unreadable(exc, text, file)]
    except yaml.YAMLError as exc:
        return None, [SpecIssue(file, 1, 1, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    return doc, issues


def _unreadable(exc: yaml.reader.ReaderError, text: str, file: str) -> SpecIssue:
    """A character YAML does not allow (a control character such as U+001F), at its line and column."""
    at = min(max(exc.position, 0), len(text))
    line, column = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
    character = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return SpecIssue(file, line, column, "", f"invalid YAML: the character U+{character:04X} is not allowed; remove it")


class _AliasError(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.line, self.column = node.start_mark.line + 1, node.start_mark.column + 1


_MAX_DEPTH = 64  # the deepest real spec is ~6 levels; far deeper ones would exhaust the stack
_MAX_NODES = 20_000  # aliases can expand a small file exponentially ("billion laughs")


def _index(
    node: yaml.Node,
    path: PathKey,
    doc: Document,
    issues: list[SpecIssue],
    loader: yaml.SafeLoader,
    ancestors: frozenset[int] = frozenset(),
) -> None:
    if id(node) in ancestors:
        raise _AliasError("an alias refers to a mapping or list that contains it", node)
    if len(path) > _MAX_DEPTH:
        raise _AliasError(f"nested more than {_MAX_DEPTH} levels deep", node)
    if len(doc.value_positions) > _MAX_NODES:
        error = _AliasError(f"the document expands to more than {_MAX_NODES} values (aliases nested too deep)", node)
        error.line, error.column = doc.key_positions.get(path[:1], (error.line, error.column))
        raise error
    ancestors = ancestors | {id(node)}
    start = node.start_mark
    if not path and isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.value:
        first = node.value[0]
        start = (first[0] if isinstance(first, tuple) else first).start_mark  # skip leading comments
    doc.value_positions.setdefault(path, (start.line + 1, start.column + 1))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[Any, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                continue
            _key_as_written(key_node)
            key = _key_of(key_node, loader)
            key_at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            child = (*path, key)
            if key in first_seen:
                issues.append(
                    SpecIssue(
                        doc.file, *key_at, dotted(child), f"duplicate key {key!r} (first defined on line {first_seen[key]})"
                    )
                )
                continue
            first_seen[key] = key_at[0]
            doc.key_positions[child] = key_at
            _index(value_node, child, doc, issues, loader, ancestors)
        # Keys a merge (`<<: *base`) brings in sit where the anchored mapping wrote them;
        # keys written here win, then earlier merge sources over later ones, as PyYAML builds them.
        for source in merged:
            if not isinstance(source, yaml.MappingNode):
                continue
            for key_node, value_node in source.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                _key_as_written(key_node)
                key = _key_of(key_node, loader)
                child = (*path, key)
                if key in first_seen or child in doc.key_positions:
                    continue
                doc.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                _index(value_node, child, doc, [], loader, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.key_positions[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _index(item, child, doc, issues, loader, ancestors)


_STR_TAG = "tag:yaml.org,2002:str"
_IMPLICIT_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "null", "timestamp")}


def _key_as_written(key_node: yaml.Node) -> None:
    """Every key in lichen.yaml is a name, so an unquoted ``no:`` or ``123:`` keeps its text.

    YAML 1.1 would make them false and 123 (a service called ``no`` would
    become ``False``); as in YAML 1.2 and Kubernetes, the key is the text written.
    """
    if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _IMPLICIT_TAGS and key_node.style is None:
        key_node.tag = _STR_TAG


def _key_of(key_node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(key_node, yaml.ScalarNode):
        key = loader.construct_object(key_node, deep=True)
        return key if isinstance(key, (str, int, float, bool)) or key is None else str(key)
    return f"<{key_node.id} key at line {key_node.start_mark.line + 1}>"
