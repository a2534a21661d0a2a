"""The subset of Go's text/template that Prometheus alert labels and annotations use.

Supported inside ``{{ ... }}`` (with ``{{-``/``-}}`` whitespace trimming): ``$labels.name``,
``.Labels.name``, ``$value``/``.Value``, ``$externalLabels.name``, ``$externalURL``, string and
number literals, ``index $labels "name"``, and pipelines through ``humanize``,
``humanize1024``, ``humanizePercentage``, ``humanizeDuration``, ``printf``, ``toUpper``,
``toLower``, ``title``. ``$value`` prints as Go's ``%v`` does (``1e+06``, ``0.5``).
Anything else raises :class:`TemplateError` when the rule file is loaded.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from lichen.errors import DataError


class TemplateError(DataError):
    pass


def go_float(v: float) -> str:
    """Go's fmt %v for a float64."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign, digits, exp = Decimal(repr(v)).as_tuple()
    ds = list(digits)
    while len(ds) > 1 and ds[-1] == 0:
        ds.pop()
        exp += 1  # type: ignore[operator]
    nd = len(ds)
    x = nd + int(exp) - 1
    prefix = "-" if sign else ""
    if x < -4 or x >= 6:  # strconv 'g' with the shortest precision decides with eprec = 6
        mant = str(ds[0]) + ("." + "".join(map(str, ds[1:])) if nd > 1 else "")
        return f"{prefix}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    return prefix + _positional(abs(v))


def _positional(v: float) -> str:
    text = repr(v)
    if "e" not in text and "E" not in text:
        return text[:-2] if text.endswith(".0") else text
    from numpy import format_float_positional

    return format_float_positional(v, trim="-")


def _go_g4(v: float) -> str:
    return "%.4g" % v


def humanize(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _go_g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"]:
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _go_g4(v) + prefix
    prefix = ""
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"]:
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _go_g4(v) + prefix


def humanize1024(v: float) -> str:
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _go_g4(v)
    prefix = ""
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]:
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return _go_g4(v) + prefix


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _go_g4(v)
    if v == 0:
        return "0s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        seconds = int(v) % 60
        minutes = (int(v) // 60) % 60
        hours = (int(v) // 3600) % 24
        days = int(v) // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}%.4gs" % v
    prefix = ""
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"]:
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return "%.4g%ss" % (v, prefix)


def _printf(fmt: str, *args: object) -> str:
    def conv(m: re.Match[str]) -> str:
        return m.group(0).replace("v", "s")

    pyfmt = re.sub(r"%[-+ #0]*\d*(?:\.\d+)?v", conv, fmt)
    values = [go_float(a) if isinstance(a, float) and "%v" in fmt else a for a in args]
    try:
        return pyfmt % tuple(values)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"printf {fmt!r}: {exc}") from None


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": lambda v: humanize(float(v)),
    "humanize1024": lambda v: humanize1024(float(v)),
    "humanizePercentage": lambda v: _go_g4(float(v) * 100) + "%",
    "humanizeDuration": lambda v: humanize_duration(float(v)),
    "printf": _printf,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
}

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[object, ...]

    def render(self, labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None) -> str:
        data = {"labels": labels, "value": value, "external": external_labels or {}}
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                result = _run_pipeline(part, data)  # type: ignore[arg-type]
                out.append(go_float(result) if isinstance(result, float) else str(result))
        return "".join(out)


def _operand(word: str, data: dict) -> object:
    if word.startswith('"') or word.startswith("`"):
        return word[1:-1]
    if word in ("$value", ".Value"):
        return float(data["value"])
    if word in ("$labels", ".Labels"):
        return data["labels"]
    if word in ("$externalURL", ".ExternalURL"):
        return ""
    for prefix, key in (("$labels.", "labels"), (".Labels.", "labels"), ("$externalLabels.", "external"), (".ExternalLabels.", "external")):
        if word.startswith(prefix):
            return data[key].get(word[len(prefix) :], "")
    try:
        return float(word) if "." in word or "e" in word else int(word)
    except ValueError:
        raise TemplateError(f"unsupported template operand {word!r}") from None


def _run_pipeline(commands: list[list[str]], data: dict) -> object:
    result: object = None
    for i, words in enumerate(commands):
        head, rest = words[0], words[1:]
        if head == "index":
            target = _operand(rest[0], data)
            key = _operand(rest[1], data)
            result = target.get(str(key), "") if isinstance(target, dict) else ""  # type: ignore[union-attr]
            continue
        if head in FUNCTIONS:
            args = [_operand(w, data) for w in rest]
            if i > 0:
                args.append(result)
            result = FUNCTIONS[head](*args)
            continue
        if rest or i > 0:
            raise TemplateError(f"unsupported template function {head!r}")
        result = _operand(head, data)
    return result


def _split_words(text: str) -> list[str]:
    try:
        lexer = shlex.shlex(text, posix=False)
        lexer.whitespace_split = True
        lexer.quotes = '"`'
        return list(lexer)
    except ValueError as exc:
        raise TemplateError(f"cannot parse template action {text!r}: {exc}") from None


def compile_template(text: str) -> Template:
    """Parse a template once; raises :class:`TemplateError` for anything outside the subset."""
    parts: list[object] = []
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos : m.start()]
        if m.group(1):
            literal = literal.rstrip()
        if parts and isinstance(parts[-1], tuple) and parts[-1][0] == "trim-next":
            parts.pop()
            literal = literal.lstrip()
        if literal:
            parts.append(literal)
        body = m.group(2).strip()
        if body.startswith("/*") or body == "":
            pass
        else:
            commands = [_split_words(c.strip()) for c in body.split("|")]
            for words in commands:
                if not words:
                    raise TemplateError(f"empty command in template action {{{{{body}}}}}")
                if words[0] in ("if", "else", "end", "range", "with", "define", "template", "block") or ":=" in words:
                    raise TemplateError(f"template action {{{{{body}}}}} is not supported (only values and pipelines)")
            _run_pipeline(commands, {"labels": {}, "value": 0.0, "external": {}})
            parts.append(commands)
        if m.group(3):
            parts.append(("trim-next",))
        pos = m.end()
    literal = text[pos:]
    if parts and isinstance(parts[-1], tuple) and parts[-1][0] == "trim-next":
        parts.pop()
        literal = literal.lstrip()
    if literal:
        parts.append(literal)
    return Template(text, tuple(parts))


def expand(text: str, labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None) -> str:
    if "{{" not in text:
        return text
    return compile_template(text).render(labels, value, external_labels)
