"""Go's text/template as Prometheus alert labels and annotations use it.

Supported: text and ``{{ ... }}`` actions with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
``if``/``else if``/``else``/``end``, ``range`` (over maps in key order, with ``$k, $v :=``),
``with``; variables (``$x := ...``, ``$x = ...``); pipelines with ``|`` and parentheses; operands
``.``, ``.Labels.name``, ``$labels.name``, ``$value``/``.Value``, ``$externalLabels``,
``$externalURL``, string/raw-string/number/bool literals. Functions: Go's builtins ``and or not
len index print printf println eq ne lt le gt ge urlquery html js`` and Prometheus' ``humanize
humanize1024 humanizeDuration humanizePercentage humanizeTimestamp title toUpper toLower match
reReplaceAll stripPort safeHtml parseDuration args``, and ``query`` (run through the function
the renderer is given) with ``first label value strvalue sortByLabel``. Prometheus runs
templates with ``missingkey=zero``: a missing label is the empty string. ``tmpl``, ``graphLink``
and ``tableLink`` fail when the rule file is loaded. An error while rendering gives ``<error expanding template: ...>``, as Prometheus does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from lichen.observe.promql_values import QueryError
from lichen.observe.template_functions import (
    FUNCTIONS,
    TemplateError,
    _kind,
    _truth,
    go_float,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_timestamp,
    query_samples,
    to_text,
)

__all__ = [
    "FUNCTIONS", "Template", "TemplateError", "compile_template", "expand", "go_float", "humanize", "humanize1024",
    "humanize_duration", "humanize_timestamp", "to_text",
]  # fmt: skip


# ------------------------------------------------------------------ parsing

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))(?![\w.])
        |(?P<decl>:=)|(?P<assign>=)|(?P<pipe>\|)|(?P<lp>\()|(?P<rp>\))(?P<rpfield>(?:\.\w+)*)|(?P<comma>,)
        |(?P<var>\$\w*(?:\.\w+)*)|(?P<field>(?:\.\w+)+|\.)|(?P<ident>[A-Za-z_]\w*)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"unexpected {text[pos:].strip()[:20]!r} in action {{{{{text.strip()}}}}}")
        kind = m.lastgroup or ""
        if kind == "rpfield":
            out.append(("rp", ")"))
            if m.group("rpfield"):
                out.append(("chain", m.group("rpfield")))
        else:
            out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class _Pipeline:
    decl: list[str] = field(default_factory=list)
    assign: bool = False
    commands: list[list[tuple[str, Any]]] = field(default_factory=list)


def _parse_pipeline(tokens: list[tuple[str, str]], allow_decl: bool = True) -> _Pipeline:
    pipe = _Pipeline()
    i = 0
    if allow_decl:  # $x := ... | $x = ... | $k, $v := ...
        j, names = 0, []
        while j < len(tokens) and tokens[j][0] == "var" and "." not in tokens[j][1]:
            names.append(tokens[j][1])
            j += 1
            if j < len(tokens) and tokens[j][0] == "comma":
                j += 1
                continue
            break
        if names and j < len(tokens) and tokens[j][0] in ("decl", "assign"):
            pipe.decl, pipe.assign, i = names, tokens[j][0] == "assign", j + 1
    command: list[tuple[str, Any]] = []
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "pipe":
            if not command:
                raise TemplateError("missing command before '|'")
            pipe.commands.append(command)
            command = []
        elif kind == "lp":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"lp": 1, "rp": -1}.get(tokens[j][0], 0)
                j += 1
            if depth:
                raise TemplateError("unclosed left paren")
            inner = _parse_pipeline(tokens[i + 1 : j - 1], allow_decl=False)
            chain = tokens[j][1] if j < len(tokens) and tokens[j][0] == "chain" else ""
            command.append(("sub", (inner, chain)))
            i = j + (1 if chain else 0)
            continue
        elif kind in ("rp", "decl", "assign", "comma", "chain"):
            raise TemplateError(f"unexpected {text!r}")
        elif kind == "str":
            try:
                command.append(("lit", json.loads(text)))
            except ValueError:
                raise TemplateError(f"invalid string literal {text}") from None
        elif kind == "raw":
            command.append(("lit", text[1:-1]))
        elif kind == "num":
            is_float = re.search(r"[.eE]", text) and not text.lower().startswith(("0x", "-0x", "+0x"))
            command.append(("lit", float(text) if is_float else int(text, 0)))
        elif kind == "ident" and text in ("true", "false"):
            command.append(("lit", text == "true"))
        elif kind == "ident" and text == "nil":
            command.append(("lit", None))
        elif kind == "ident":
            if text not in FUNCTIONS and text not in ("and", "or", "query"):
                raise TemplateError(f'function "{text}" not defined')
            command.append(("fn", text))
        else:
            command.append((kind, text))
        i += 1
    if command:
        pipe.commands.append(command)
    if not pipe.commands:
        raise TemplateError("missing value for command")
    return pipe


def _parse(text: str) -> list[Any]:
    """Text and actions to a tree: str | ("print", pipe) | ("set", pipe) | ("if"/"with"/"range", pipe, body, else)."""
    root: list[Any] = []
    stack: list[tuple[list[Any], Any]] = [(root, None)]
    pos = 0
    trim_next = False
    for m in re.finditer(r"\{\{(-\s)?(.*?)(\s-)?\}\}", text, re.DOTALL):
        literal = text[pos : m.start()]
        if trim_next:
            literal = literal.lstrip()
        if m.group(1):
            literal = literal.rstrip()
        if literal:
            stack[-1][0].append(literal)
        trim_next = bool(m.group(3))
        pos = m.end()
        body = m.group(2).strip()
        if body.startswith("/*"):
            continue
        words = body.split(None, 1)
        keyword = words[0] if words else ""
        rest = words[1] if len(words) > 1 else ""
        if keyword in ("if", "with", "range"):
            node = [keyword, _parse_pipeline(_tokens(rest)), [], None]
            stack[-1][0].append(node)
            stack.append((node[2], node))
        elif keyword == "else":
            _, node = stack[-1]
            if node is None or node[3] is not None:
                raise TemplateError("unexpected {{else}}")
            node[3] = []
            stack.pop()
            if rest.startswith(("if ", "with ")):  # else if: a nested node that shares the {{end}}
                kw, cond = rest.split(None, 1)
                inner = [kw, _parse_pipeline(_tokens(cond)), [], None, "chained"]
                node[3].append(inner)
                stack.append((inner[2], inner))
            else:
                stack.append((node[3], node))
        elif keyword == "end":  # an "else if" replaced its parent on the stack, so one pop closes the chain
            if len(stack) == 1:
                raise TemplateError("unexpected {{end}}")
            stack.pop()
        elif keyword in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"template action {{{{{body}}}}} is not supported")
        elif body:
            pipe = _parse_pipeline(_tokens(body))
            stack[-1][0].append(("set" if pipe.decl else "print", pipe))
        else:
            raise TemplateError("missing value for command")
    literal = text[pos:]
    if "{{" in literal:
        raise TemplateError("unclosed action")
    if trim_next:
        literal = literal.lstrip()
    if literal:
        stack[-1][0].append(literal)
    if len(stack) > 1:
        raise TemplateError(f"unexpected EOF: {{{{{stack[-1][1][0]}}}}} has no {{{{end}}}}")
    return root


# ------------------------------------------------------------------ execution


class _Data(dict):  # type: ignore[type-arg]
    """The template's dot: a Go struct, so an unknown field is an error (a map's missing key is "")."""


def _field(value: Any, chain: str) -> Any:
    for name in [p for p in chain.split(".") if p]:
        if isinstance(value, _Data) and name not in value:
            raise TemplateError(f"can't evaluate field {name} in type *template.tmplData")
        if isinstance(value, dict):
            value = value.get(name, "")  # missingkey=zero
        else:
            raise TemplateError(f"can't evaluate field {name} in type {_kind(value)}")
    return value


_QUERY = "\x00query"  # where the query function travels among a scope's variables


class _Scope:
    def __init__(self, dot: Any, variables: dict[str, Any]) -> None:
        self.dot = dot
        self.vars = variables


def _operand(kind: str, payload: Any, scope: _Scope) -> Any:
    if kind == "lit":
        return payload
    if kind == "field":
        return scope.dot if payload == "." else _field(scope.dot, payload)
    if kind == "var":
        name, _, chain = payload.partition(".")
        if name not in scope.vars:
            raise TemplateError(f"undefined variable: {name}")
        return _field(scope.vars[name], chain)
    if kind == "sub":
        inner, chain = payload
        return _field(_run(inner, scope), chain)
    raise TemplateError(f"unexpected {payload!r}")


def _run(pipe: _Pipeline, scope: _Scope) -> Any:
    result: Any = None
    for i, command in enumerate(pipe.commands):
        head_kind, head = command[0]
        if head_kind == "fn":
            if head == "query":  # PromQL at the evaluation time, through the function the renderer was given
                run_query = scope.vars.get(_QUERY)
                if run_query is None:
                    raise TemplateError("query is not available here")
                args = [_operand(k, p, scope) for k, p in command[1:]] + ([result] if i else [])
                if len(args) != 1:
                    raise TemplateError(f"wrong number of args for query: want 1 got {len(args)}")
                result = query_samples(run_query(str(args[0])))
                continue
            if head in ("and", "or"):  # short-circuit, returning the deciding operand
                operands = command[1:]
                if i:
                    operands = [*operands, ("lit", result)]
                for kind, payload in operands:
                    result = _operand(kind, payload, scope)
                    if _truth(result) != (head == "and"):
                        break
                continue
            args = [_operand(k, p, scope) for k, p in command[1:]]
            if i:
                args.append(result)
            try:
                result = FUNCTIONS[head](*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, re.error, KeyError, IndexError) as exc:
                raise TemplateError(f"error calling {head}: {exc}") from None
        else:
            if len(command) > 1 or i:
                raise TemplateError(f"can't give argument to non-function {head}")
            result = _operand(head_kind, head, scope)
    if pipe.decl:
        if pipe.assign:
            for name in pipe.decl:
                if name not in scope.vars:
                    raise TemplateError(f"undefined variable: {name}")
        scope.vars[pipe.decl[-1]] = result
    return result


def _execute(nodes: list[Any], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "print":
            out.append(to_text(_run(node[1], scope)))
        elif node[0] == "set":
            _run(node[1], scope)
        elif node[0] in ("if", "with"):
            value = _run(node[1], scope)
            branch = node[2] if _truth(value) else (node[3] or [])
            inner = _Scope(value if node[0] == "with" and _truth(value) else scope.dot, dict(scope.vars))
            _execute(branch, inner, out)
            scope.vars.update({k: v for k, v in inner.vars.items() if k in scope.vars})
        elif node[0] == "range":
            pipe = node[1]
            decl, pipe_run = pipe.decl, _Pipeline(commands=pipe.commands)
            value = _run(pipe_run, scope)
            if isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, (list, tuple)) or value is None:
                items = list(enumerate(value or []))
            else:
                raise TemplateError(f"range can't iterate over {to_text(value)}")
            if not items:
                _execute(node[3] or [], scope, out)
            for key, item in items:
                inner = _Scope(item, dict(scope.vars))
                if len(decl) == 1:
                    inner.vars[decl[0]] = item
                elif len(decl) == 2:
                    inner.vars[decl[0]], inner.vars[decl[1]] = key, item
                _execute(node[2], inner, out)


@dataclass(frozen=True)
class Template:
    text: str
    tree: tuple[Any, ...]

    def render(
        self,
        labels: dict[str, str],
        value: float,
        external_labels: dict[str, str] | None = None,
        external_url: str = "",
        query: Callable[[str], list[tuple[dict[str, str], float]]] | None = None,
    ) -> str:
        """Render; ``query`` runs PromQL for the ``query`` function (a rule passes its evaluation time's engine)."""
        data = _Data({"Labels": labels, "Value": float(value), "ExternalLabels": external_labels or {}, "ExternalURL": external_url})
        variables = {
            "$": data,
            "$labels": labels,
            "$value": float(value),
            "$externalLabels": external_labels or {},
            "$externalURL": external_url,
            _QUERY: query,
        }
        out: list[str] = []
        try:
            _execute(list(self.tree), _Scope(data, variables), out)
        except (TemplateError, QueryError) as exc:
            return f"<error expanding template: {exc.message}>"
        except RecursionError:
            return "<error expanding template: too deep>"
        return "".join(out)


def _check_names(nodes: list[Any]) -> None:
    """Functions Lichen cannot run (query and friends) fail at load time, not at every evaluation."""
    for node in nodes:
        if isinstance(node, str):
            continue
        pipes = [node[1]]
        for pipe in pipes:
            for command in pipe.commands:
                for kind, payload in command:
                    if kind == "fn" and payload in _UNSUPPORTED:
                        raise TemplateError(f"template function {payload!r} is not supported by Lichen")
                    if kind == "sub":
                        pipes.append(payload[0])
        if node[0] in ("if", "with", "range"):
            _check_names(node[2])
            _check_names(node[3] or [])


_UNSUPPORTED = {"tmpl", "graphLink", "tableLink"}


@lru_cache(maxsize=4096)
def compile_template(text: str) -> Template:
    """Parse a template once (cached); raises :class:`TemplateError` for a syntax error or an unsupported function."""
    tree = _parse(text)
    _check_names(tree)
    return Template(text, tuple(tree))


def expand(
    text: str, labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None, external_url: str = ""
) -> str:
    if "{{" not in text:
        return text
    return compile_template(text).render(labels, value, external_labels, external_url)
