"""Which route a request matches: the longest path prefix whose host and header matches hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RouteRule:
    prefix: str
    service: str
    host: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    strip_prefix: bool = False
    timeout_s: float | None = None


def prefix_matches(prefix: str, path: str) -> bool:
    """``/api`` matches ``/api``, ``/api/x`` and ``/api?q`` but not ``/apix``; ``/`` matches everything."""
    if not path.startswith(prefix):
        return False
    if len(path) == len(prefix) or prefix.endswith("/"):
        return True
    return path[len(prefix)] in "/?"


def order_rules(rules: Sequence[RouteRule]) -> tuple[RouteRule, ...]:
    """Most specific first: longer prefix, then rules with a host, then with more header matches."""
    return tuple(sorted(rules, key=lambda r: (-len(r.prefix), r.host is None, -len(r.headers))))


def match_route(
    ordered: Sequence[RouteRule], host: str | None, path: str, headers: Mapping[str, str]
) -> RouteRule | None:
    """The first rule in ``ordered`` (see :func:`order_rules`) matching host, path and headers.

    ``host`` is compared without its port, case-insensitively; ``headers`` keys
    are lower-case.
    """
    bare_host = host.rsplit(":", 1)[0].lower() if host else None
    for rule in ordered:
        if not prefix_matches(rule.prefix, path):
            continue
        if rule.host is not None and rule.host.lower() != bare_host:
            continue
        if rule.headers and any(headers.get(k.lower()) != v for k, v in rule.headers.items()):
            continue
        return rule
    return None


def rewrite_path(rule: RouteRule, path: str) -> str:
    """The upstream path: the prefix removed when ``strip_prefix`` (keeping a leading slash)."""
    if not rule.strip_prefix or rule.prefix == "/":
        return path
    rest = path[len(rule.prefix.rstrip("/")) :]
    return rest if rest.startswith("/") else "/" + rest
