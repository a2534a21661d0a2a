"""Edit a ``lichen.yaml`` in place, keeping its comments, key order, flow or block style and quotes.

:func:`set_values` is what ``lichen advise --apply`` writes with: it loads the text with ruamel.yaml's
round-trip loader (indentation as the file writes it), sets the values it is given, and dumps it. Where
ruamel.yaml would still re-spell a line nobody changed (``[{log: true}]`` comes back as ``[log: true]``),
only the lines the change touched are taken: the dump of the unchanged document and the dump of the
changed one are diffed, and each changed run of lines replaces its counterpart in the original text. The
merged text must read back (PyYAML, as ``lichen validate`` reads it) exactly as the edited document; where
it does not (a changed line next to one ruamel.yaml re-spells), ruamel.yaml's dump of the whole file is
used instead (comments and order kept). CRLF line endings and a missing final newline are kept. An edit
that would change any other value (one shared through a YAML anchor or merge key) is refused. A key that
is missing is added at the end of its mapping, in that mapping's style, before the blank lines and
comments that followed the mapping's last key. The caller validates the result before anything is written.
"""

from __future__ import annotations

import copy
import difflib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from lichen.spec.documents import LocatingSafeLoader

KeyPath = tuple[str, ...]


class EditError(ValueError):
    """The text could not be edited there (not YAML, or a path through something that is not a mapping)."""


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file writes them (ruamel.yaml's own guess takes
    a sequence's indent for the mappings')."""
    mapping = sequence = offset = None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line, following in zip(lines, lines[1:]):
        if not line.rstrip().endswith(":") or line.lstrip().startswith("- "):
            continue
        step = len(following) - len(following.lstrip()) - (len(line) - len(line.lstrip()))
        if following.lstrip().startswith("- ") and offset is None and step >= 0:
            dash = following.lstrip()[2:]
            offset, sequence = step, step + 2 + len(dash) - len(dash.lstrip())
        elif not following.lstrip().startswith("- ") and mapping is None and step > 0:
            mapping = step
    mapping = mapping or 2
    return mapping, sequence if sequence is not None else mapping, offset or 0


def _yaml(text: str) -> YAML:
    editor = YAML(typ="rt")
    editor.preserve_quotes = True
    editor.width = 4096  # never re-wrap a long line the user wrote
    mapping, sequence, offset = _guess_indent(text)
    editor.indent(mapping=mapping, sequence=max(sequence, offset + 2), offset=offset)
    return editor


def _dump(editor: YAML, data: Any) -> str:
    out = io.StringIO()
    editor.dump(data, out)
    return out.getvalue()


def _set(data: CommentedMap, path: KeyPath, value: Any) -> None:
    node = data
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:  # the rest of the path is new: add it whole, in the parent's style
            for inner in reversed(path[depth + 1:]):
                wrapped = CommentedMap([(inner, value)])
                if node.fa.flow_style():
                    wrapped.fa.set_flow_style()
                value = wrapped
            _add(node, key, value)
            return
        if not isinstance(child, CommentedMap):
            raise EditError(f"{'.'.join(path[:depth + 1])} is not a mapping")
        node = child
    if path[-1] in node:
        node[path[-1]] = value
    else:
        _add(node, path[-1], value)


def _add(node: CommentedMap, key: str, value: Any) -> None:
    """Append ``key``, taking over the comments and blank lines that trailed the mapping's last key (a key
    that is there with no value, ``resources:`` over commented-out lines, takes it in place)."""
    if key in node:
        node[key] = value
        return
    last = next(reversed(node), None) if len(node) else None
    node[key] = value
    slots = node.ca.items.get(last) if last is not None else None
    token = slots[2] if slots is not None and len(slots) > 2 else None
    if token is None or "\n" not in token.value:
        return
    # the token holds the last key's end-of-line comment, then the lines that followed: keep the first there
    end_of_line, following = token.value.split("\n", 1)
    if not following:
        return
    moved = copy.copy(token)
    if end_of_line.strip():
        token.value = end_of_line + "\n"
        moved.value = "\n" + following  # the new key's line ends, then what followed the old one
    else:
        del node.ca.items[last]
    trailing = [None, None, moved, None]
    owner, owner_key = node, key
    while isinstance(owner[owner_key], CommentedMap) and len(owner[owner_key]):
        owner = owner[owner_key]
        owner_key = next(reversed(owner))
    owner.ca.items[owner_key] = trailing


def _merge(original: str, before: str, after: str) -> str | None:
    """``original`` with the lines that changed from ``before`` to ``after`` (two dumps) changed the same way;
    None where a changed run cannot be placed (its lines, or the line it goes next to, are ones ruamel.yaml
    re-spells). Lines are matched ignoring trailing blanks."""
    if before == original:
        return after
    ours, base, theirs = original.splitlines(True), before.splitlines(True), after.splitlines(True)
    to_original: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, [line.rstrip() for line in base], [line.rstrip() for line in ours],
                                      autojunk=False)
    for block in matcher.get_matching_blocks():
        to_original.update({block.a + i: block.b + i for i in range(block.size)})
    merged, cursor = [], 0
    for tag, b1, b2, t1, t2 in difflib.SequenceMatcher(None, base, theirs, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if b2 > b1:  # lines replaced or deleted: each must be in the original, one after the other
            if any(i not in to_original for i in range(b1, b2)) or \
                    to_original[b2 - 1] - to_original[b1] != b2 - 1 - b1:
                return None
            anchor, end = to_original[b1], to_original[b2 - 1] + 1
        elif b1 - 1 in to_original:  # lines inserted after a line the original has as it is
            anchor = end = to_original[b1 - 1] + 1
        elif b1 == 0 or b1 in to_original:  # ... or before one
            anchor = end = to_original.get(b1, 0)
        else:
            return None
        if anchor < cursor:
            return None
        merged.extend(ours[cursor:anchor])
        merged.extend(theirs[t1:t2])
        cursor = end
    merged.extend(ours[cursor:])
    return "".join(merged)


def _leaves(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaves(inner, (*path, str(key)))
    else:
        yield path, repr(value)


def _plain(text: str) -> Any:
    return yaml.load(text, Loader=LocatingSafeLoader)  # what lichen validate reads: anchors, aliases and merge keys resolved


def set_values(text: str, changes: Sequence[tuple[KeyPath, Any]]) -> str:
    """``text`` with each ``(key path, value)`` set; every line the change does not touch, kept as it was
    where ruamel.yaml allows (else its dump of the whole file, comments kept); refuses an edit that would
    change anything else (a value shared through a YAML anchor or merge key)."""
    crlf = "\r\n" in text
    work = text.replace("\r\n", "\n")
    final_newline = work.endswith("\n")
    if not final_newline:
        work += "\n"
    try:
        loader = _yaml(work)
        data = loader.load(work)
        before = _dump(loader, data)
        plain_before = _plain(work)
    except Exception as exc:  # noqa: BLE001 - ruamel and PyYAML raise many kinds; the caller shows the message
        raise EditError(f"cannot read the YAML: {exc}") from None
    if not isinstance(data, CommentedMap):
        raise EditError("the document is not a mapping")
    for path, value in changes:
        _set(data, path, value)
    after = _dump(loader, data)
    plain_after = _plain(after)
    old, new = dict(_leaves(plain_before)), dict(_leaves(plain_after))
    paths = [tuple(path) for path, _ in changes]
    for leaf in sorted(set(old) | set(new)):
        if old.get(leaf) != new.get(leaf) and not any(leaf[:len(p)] == p or p[:len(leaf)] == leaf for p in paths):
            raise EditError(f"changing {', '.join('.'.join(p) for p in paths)} would also change "
                            f"{'.'.join(leaf)} (they share a YAML anchor or merge key): edit it by hand")
    merged = _merge(work, before, after)
    if merged is None or _plain(merged) != plain_after:
        merged = after  # ruamel.yaml's own dump: comments and order kept, some untouched lines re-spelled
    if not final_newline:
        merged = merged[:-1] if merged.endswith("\n") else merged
    return merged.replace("\n", "\r\n") if crlf else merged
