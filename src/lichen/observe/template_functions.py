"""The functions and value printing of Go templates as Prometheus provides them (used by :mod:`templating`).

Go's builtins (``and``/``or`` are handled by the executor, as they short-circuit) and Prometheus'
template functions; values print as Go's ``fmt`` ``%v`` does.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from html import escape as html_escape
from typing import Any

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
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = "%.4g" % v
    return re.sub(r"e([-+])(\d)$", r"e\g<1>0\2", text)


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
        return f"{sign}{_go_g4(v)}s"
    prefix = ""
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"]:
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_go_g4(v)}{prefix}s"


def humanize_timestamp(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _go_g4(v)
    moment = datetime.fromtimestamp(v, tz=timezone.utc)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + " +0000 UTC"


# ------------------------------------------------------------------ values and printing


def to_text(value: Any) -> str:
    """How Go's template prints a value (fmt %v)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{to_text(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(to_text(x) for x in value) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    if isinstance(value, float):
        return value != 0  # NaN is true, as in Go
    return bool(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TemplateError(f"can't convert {to_text(value)} to float")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        text = str(value).strip()
        if text.lower() in ("inf", "+inf", "-inf", "nan"):
            return float(text)
        return float(int(text, 0)) if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text) else float(text)
    except ValueError:
        raise TemplateError(f"can't convert {value!r} to float") from None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"


def _compare(op: str, a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka == "other":
        if op in ("eq", "ne") and ka == "other" and kb == "other":
            return (a == b) == (op == "eq")
        raise TemplateError(f"incompatible types for comparison: {to_text(a)} and {to_text(b)}")
    if op in ("eq", "ne"):
        return (a == b) == (op == "eq")
    if ka == "bool":
        raise TemplateError("invalid type for comparison")
    return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


def _eq(a: Any, *rest: Any) -> bool:
    if not rest:
        raise TemplateError("missing argument for comparison")
    return any(_compare("eq", a, b) for b in rest)


def _printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: %v %s %d %f %e %g %q %x %%."""
    out: list[str] = []
    arg_i = 0
    for m in re.finditer(r"%([-+ #0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])|[^%]+|%", fmt):
        if not m.group(4):
            out.append(m.group(0))
            continue
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if arg_i >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[arg_i]
        arg_i += 1
        spec = flags + (width or "") + (f".{prec}" if prec is not None else "")
        if verb == "v" or (verb == "s" and isinstance(a, dict)):
            text = to_text(a)
            out.append(f"{text:{'<' if '-' in flags else '>'}{width or 0}}" if width else text)
        elif verb == "s" and isinstance(a, str):
            text = a if prec is None else a[: int(prec)]
            out.append(f"{text:{'<' if '-' in flags else '>'}{width or 0}}" if width else text)
        elif verb == "q":
            out.append('"' + str(a).replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif verb in "dxXob" and isinstance(a, int) and not isinstance(a, bool):
            out.append(("%" + spec + verb.replace("b", "d")) % a if verb != "b" else format(a, "b"))
        elif verb in "feEgG" and isinstance(a, (int, float)) and not isinstance(a, bool) and not isinstance(a, int):
            if math.isnan(a) or math.isinf(a):
                out.append(("+" if "+" in flags and a > 0 else "") + go_float(a).lstrip("+") if not math.isinf(a) else ("+Inf" if a > 0 and "+" in flags else ("Inf" if a > 0 else "-Inf")))
            else:
                out.append(("%" + spec + verb) % a)
        elif verb == "t" and isinstance(a, bool):
            out.append(to_text(a))
        else:
            go_type = {"int": "int", "float": "float64", "string": "string", "bool": "bool"}.get(_kind(a), "map[string]string")
            out.append(f"%!{verb}({go_type}={to_text(a)})")
    if arg_i < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_kind(a) if _kind(a) != 'float' else 'float64'}={to_text(a)}" for a in args[arg_i:]) + ")")
    return "".join(out)


def _sprint(*args: Any) -> str:
    out = ""
    for i, a in enumerate(args):  # fmt.Sprint: a space between operands when neither is a string
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += to_text(a)
    return out


def _strip_port(hostport: str) -> str:
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    host, sep, port = hostport.rpartition(":")
    return host if sep and ":" not in host else hostport


def _parse_duration(text: str) -> float:
    import promql_parser

    try:
        return float(promql_parser.parse_duration(str(text)).total_seconds())
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"parseDuration {text!r}: {exc}") from None


def _index(target: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(target, dict):
            target = target.get(key, "")
        elif isinstance(target, (list, tuple, str)) and isinstance(key, int):
            if not 0 <= key < len(target):
                raise TemplateError(f"index out of range: {key}")
            target = target[key]
        else:
            raise TemplateError(f"can't index item of type {_kind(target)}")
    return target


def query_samples(samples: list[tuple[dict[str, str], float]]) -> list[dict[str, Any]]:
    """A query's result as templates see it: samples with ``.Labels`` and ``.Value``."""
    return [{"Labels": dict(labels), "Value": float(value)} for labels, value in samples]


def _first(samples: Any) -> Any:
    if not isinstance(samples, list):
        raise TemplateError(f"first() called on {to_text(samples)}, not a query result")
    if not samples:
        raise TemplateError("first() called on vector with no elements")
    return samples[0]


def _sample_field(sample: Any, name: str) -> Any:
    if not isinstance(sample, dict) or name not in sample:
        raise TemplateError(f"expected a sample from query, got {to_text(sample)}")
    return sample[name]


def _unsupported(name: str) -> Callable[..., Any]:
    def fn(*_args: Any) -> Any:
        raise TemplateError(f"template function {name!r} is not supported by Lichen")

    return fn


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "humanize": lambda v: humanize(_to_float(v)),
    "humanize1024": lambda v: humanize1024(_to_float(v)),
    "humanizePercentage": lambda v: _go_g4(_to_float(v) * 100) + "%",
    "humanizeDuration": lambda v: humanize_duration(_to_float(v)),
    "humanizeTimestamp": lambda v: humanize_timestamp(_to_float(v)),
    "printf": _printf,
    "print": _sprint,
    "println": lambda *a: " ".join(to_text(x) for x in a) + "\n",
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: re.sub(r"(^|\W)(\w)", lambda m: m.group(1) + m.group(2).upper(), str(s)),  # strings.Title
    "match": lambda pattern, text: re.search(pattern, str(text)) is not None,
    "reReplaceAll": lambda pattern, repl, text: re.sub(pattern, re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", repl), str(text)),
    "stripPort": lambda s: _strip_port(str(s)),
    "safeHtml": lambda s: str(s),
    "parseDuration": _parse_duration,
    "urlquery": lambda *a: urllib.parse.quote_plus(_sprint(*a)),
    "html": lambda *a: html_escape(_sprint(*a)).replace("&#x27;", "&#39;"),
    "js": lambda *a: _sprint(*a).replace("\\", "\\\\").replace("'", "\\'").replace('"', "\\\""),
    "len": lambda v: len(v),
    "index": _index,
    "not": lambda v: not _truth(v),
    "eq": _eq,
    "ne": lambda a, b: _compare("ne", a, b),
    "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b),
    "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b),
    "args": lambda *a: {f"arg{i}": v for i, v in enumerate(a)},
    "first": lambda v: _first(v),
    "label": lambda name, sample: _sample_field(sample, "Labels").get(name, ""),
    "value": lambda sample: _sample_field(sample, "Value"),
    "strvalue": lambda sample: _sample_field(sample, "Labels").get("__value__", ""),
    "sortByLabel": lambda name, samples: sorted(samples, key=lambda x: _sample_field(x, "Labels").get(name, "")),
    **{name: _unsupported(name) for name in ("tmpl", "graphLink", "tableLink")},
}
