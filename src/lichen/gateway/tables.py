"""The gateway's live routing tables, rebuilt from the config on every reload.

Per-replica state (outstanding requests, outlier state, pooled connections)
and per-service state (in-flight count, admission queue, retry budget) live
in :class:`SharedState` keyed by name, so a reload keeps them: a request in
flight finishes on the tables it started with, the next one uses the new ones.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from lichen.control.balancing import HashRing, build_ring, choose_revision, pick_least_of_two, pick_next_usable, ring_owner
from lichen.control.outliers import OutlierState, is_ejected
from lichen.control.retry_budgets import RetryBudget
from lichen.control.routing import RouteRule, order_rules
from lichen.gateway.configs import GatewayConfig, ServiceConfig
from lichen.gateway.upstreams import UpstreamState


@dataclass
class ServiceRuntime:
    """What must survive a reload for one service."""

    inflight: int = 0
    waiters: deque[asyncio.Future[bool]] = field(default_factory=deque)
    budget: RetryBudget = field(default_factory=RetryBudget)
    discovered_idempotent: frozenset[str] = frozenset()
    ejected_until: float = 0.0  # the latest end of any replica's ejection (before it, check each replica)
    discovered_from: str = ""


@dataclass
class SharedState:
    upstreams: dict[tuple[str, str], UpstreamState] = field(default_factory=dict)
    services: dict[str, ServiceRuntime] = field(default_factory=dict)


class ServiceTable:
    def __init__(self, name: str, config: ServiceConfig, shared: SharedState, balancer: str, hash_on: str | None):
        self.name = name
        self.config = config
        self.runtime = shared.services.setdefault(name, ServiceRuntime())
        self.upstreams: list[UpstreamState] = []
        for endpoint in config.endpoints:
            state = shared.upstreams.get((name, endpoint.url))
            if state is None:
                state = shared.upstreams[(name, endpoint.url)] = UpstreamState(name, endpoint)
            elif state.endpoint != endpoint:
                state.update(endpoint)  # same address, new metadata: in-flight counts, health and pool stay
            self.upstreams.append(state)
        self.ready = [u for u in self.upstreams if u.ready]
        self.revisions = sorted({u.revision for u in self.ready})
        self.weights = dict(config.revision_weights)
        self.balancer = balancer
        self.hash_kind, _, self.hash_name = (hash_on or "").partition(":")
        self.hash_header = self.hash_name.lower().encode() if self.hash_kind == "header" else b""
        self.rings: dict[str, HashRing] = {}
        if balancer == "hash":
            for revision in self.revisions:
                self.rings[revision] = build_ring([u.id for u in self.ready if u.revision == revision])
        self.cursor = 0
        self.max_inflight = config.max_inflight
        self.timeout_s = config.timeout_s

    def idempotent_paths(self) -> frozenset[str]:
        return frozenset(self.config.idempotent_paths) | self.runtime.discovered_idempotent

    def set_outlier_state(self, upstream: UpstreamState, state: OutlierState) -> None:
        """Store a replica's passive-health state, keeping the service-wide "anyone ejected?" mark right."""
        upstream.outlier = state
        if state.ejected_until is not None and state.ejected_until > self.runtime.ejected_until:
            self.runtime.ejected_until = state.ejected_until

    def ejected_count(self, now: float) -> int:
        return sum(1 for u in self.ready if is_ejected(u.outlier, now))

    def hash_key(self, headers: list[tuple[bytes, bytes]], path: str, query: str) -> str | None:
        if self.hash_kind == "header":
            for name, value in headers:
                if name.lower() == self.hash_header:
                    return value.decode("latin-1")
            return None
        if self.hash_kind == "path":
            for key, value in parse_qsl(query):
                if key == self.hash_name:
                    return value
            segments = path.split("/")
            for i, segment in enumerate(segments[:-1]):
                if segment == self.hash_name:
                    return segments[i + 1]
        return None

    def pick(
        self, now: float, pinned: str | None, hash_key: str | None, exclude: list[UpstreamState] | None
    ) -> UpstreamState | None:
        """A ready, not ejected, not yet tried replica; ejected ones only when nothing else is left (panic)."""
        if not exclude and now >= self.runtime.ejected_until:
            usable = self.ready  # the common case: first attempt, nobody ejected
        else:
            usable = [u for u in self.ready if not is_ejected(u.outlier, now) and (not exclude or u not in exclude)]
        if not usable:
            usable = [u for u in self.ready if not exclude or u not in exclude]
            if not usable:
                return None
        if len(self.revisions) > 1 or pinned is not None:
            available = {u.revision for u in usable}
            revision = choose_revision(self.weights, available, random.random(), pinned)
            usable = [u for u in usable if u.revision == revision]
        if len(usable) == 1:
            return usable[0]
        if self.balancer == "hash" and hash_key is not None:
            ring = self.rings.get(usable[0].revision)
            if ring is not None:
                owner = ring_owner(ring, hash_key, {u.id for u in usable})
                for u in usable:
                    if u.id == owner:
                        return u
        if self.balancer == "round_robin":
            members = set(usable)
            picked = pick_next_usable([u in members for u in self.ready], self.cursor)
            if picked is not None:
                index, cursor = picked
                if not exclude:  # a retry does not take a turn from the first attempts
                    self.cursor = cursor
                return self.ready[index]
        n = len(usable)
        first = int(random.random() * n)
        second = int(random.random() * (n - 1))
        if second >= first:
            second += 1
        a, b = usable[first], usable[second]
        return (a, b)[pick_least_of_two((a.outstanding, b.outstanding), 0, 1)]


class Tables:
    """Routes and services for one version of the config."""

    def __init__(self, config: GatewayConfig, shared: SharedState) -> None:
        self.config = config
        settings = config.settings
        self.services = {
            name: ServiceTable(name, svc, shared, settings.balancer, settings.hash_on)
            for name, svc in config.services.items()
        }
        self.rules = order_rules(
            [
                RouteRule(r.prefix, r.service, r.host, dict(r.headers), r.strip_prefix, r.timeout_s)
                for r in config.routes
            ]
        )
        self.match_headers = any(rule.headers for rule in self.rules)
        self.route_listing = [
            {"prefix": r.prefix, "service": r.service, **({"host": r.host} if r.host else {}),
             **({"headers": dict(r.headers)} if r.headers else {})}
            for r in config.routes
        ]
        live = {(name, e.url) for name, svc in config.services.items() for e in svc.endpoints}
        for key in [k for k in shared.upstreams if k not in live]:
            shared.upstreams.pop(key).retire()
