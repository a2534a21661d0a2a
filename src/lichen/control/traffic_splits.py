"""How the gateway splits a service's traffic between its revisions (pure; plain data in, weights out).

Without an override, a service with ready replicas in more than one revision
(a rolling update in progress) is weighted by ready replica count per
revision, so each ready replica gets about the same share whichever revision
it runs. A service with one revision needs no weights. An override (what a
canary rollout sets: revision -> weight) wins as given.
"""

from __future__ import annotations

from collections.abc import Mapping


def revision_weights(ready_by_revision: Mapping[str, int],
                     override: Mapping[str, float] | None = None) -> dict[str, float]:
    """Revision -> weight for one service (empty: one revision, or send to every revision evenly)."""
    if override:
        return {revision: float(weight) for revision, weight in sorted(override.items()) if weight >= 0}
    ready = {revision: count for revision, count in ready_by_revision.items() if count > 0}
    if len(ready) < 2:
        return {}
    return {revision: float(count) for revision, count in sorted(ready.items())}
