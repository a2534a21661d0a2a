"""Who may call what on the control API: roles, what each grants, and the verdict for one call.

Roles are ordered: ``viewer`` reads; ``operator`` also scales, restarts,
rolls out, activates and silences; ``admin`` also manages tokens, reads the
audit log and shuts the controller down. Every route declares the least role
it needs, or ``public`` (``/healthz``, ``/metrics``, the dashboard's static
page). A route that declares nothing is refused when the API is built
(:func:`undeclared_routes`), so no route is ever open by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "operator", "admin"]
Needed = Literal["public", "viewer", "operator", "admin"]

ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
"""every role, least first; a role grants everything the ones before it grant"""
REQUIREMENTS: tuple[Needed, ...] = ("public", *ROLES)
_RANK = {name: rank for rank, name in enumerate(REQUIREMENTS)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a call: a token's public id and its role (never the secret)."""

    token_id: str
    role: Role
    name: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``status`` 0 lets the call through; 401 (who are you?) or 403 (not allowed) refuse it, with ``reason``."""

    status: int
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 0


def credential_state(revoked_at: float | None, expires_at: float | None, now_wall: float) -> str:
    """``revoked``, ``expired`` or ``active``: a control-API token's or a gateway API key's state at ``now_wall``."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and now_wall >= expires_at:
        return "expired"
    return "active"


def role_grants(role: Role, needed: Needed) -> bool:
    """Whether ``role`` may call a route that needs ``needed``."""
    return _RANK[role] >= _RANK[needed]


def judge(principal: Principal | None, failure: str, needed: Needed) -> Verdict:
    """The verdict for a call that needs ``needed``, by ``principal`` (None when the token failed: ``failure``
    says why, e.g. ``missing``, ``invalid``, ``expired`` or ``revoked``)."""
    if needed == "public":
        return Verdict(0)
    if principal is None:
        return Verdict(401, f"{failure} bearer token")
    if not role_grants(principal.role, needed):
        return Verdict(403, f"token {principal.token_id} has role {principal.role}; this needs {needed} or above")
    return Verdict(0)


def parse_role(text: str) -> Role:
    """A role name, or ValueError listing the roles."""
    value = text.strip().lower()
    if value not in ROLES:
        raise ValueError(f"unknown role {text!r}; roles: {', '.join(ROLES)}")
    return value  # type: ignore[return-value]


def undeclared_routes(routes: Iterable[tuple[str, str]], declared: Mapping[tuple[str, str], Needed]) -> list[str]:
    """``METHOD path`` of every route (method, path) with no declared requirement, sorted."""
    return sorted(f"{method} {path}" for method, path in routes if (method, path) not in declared)
