"""Error-budget arithmetic for ``lichen slo`` and the dashboard's SLO panel (pure).

With objective ``o`` (0.999) the error budget is ``1 - o`` (0.001): the share of
events that may be bad over the SLO window. From the bad-event ratio ``r``
over a window (the same ratio the burn-rate alerts read):

* attainment = ``1 - r`` (compare with ``o``);
* burn rate = ``r / (1 - o)``: 1 spends the budget exactly over the window,
  14.4 spends a 30-day budget in about two days;
* budget left = ``1 - burn rate over the whole window``: 1 is untouched,
  0 spent, below 0 overspent (shown as it is, not clamped).

A window without requests has no ratio: attainment and burn rate are
``None`` ("no traffic"), and no budget is spent (budget left 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NO_TRAFFIC, OK, BURNING, EXHAUSTED = "no traffic", "ok", "burning", "exhausted"


@dataclass(frozen=True)
class BurnAlertWindow:
    """One multi-window burn-rate condition: both windows above ``factor`` x budget (the alert, less its ``for``)."""

    long: str
    short: str
    factor: float
    severity: str


@dataclass(frozen=True)
class SloStatus:
    objective: float
    requests: float | None
    """events in the window (0 or None: no traffic)"""
    attainment: float | None
    budget_left: float
    burn_rates: dict[str, float | None]
    """burn rate per window (``5m``, ``1h`` ...); None where the window had no requests"""
    burning: list[str]
    """the alert windows (``1h/5m``) whose condition holds now"""
    state: str


def _ratio(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else max(0.0, value)


def burn_rate(bad_ratio: float | None, objective: float) -> float | None:
    """How many times faster than sustainable the budget burns; None without a ratio."""
    ratio = _ratio(bad_ratio)
    return None if ratio is None else ratio / (1.0 - objective)


def budget_left(bad_ratio: float | None, objective: float) -> float:
    """The share of the window's error budget not yet spent (1 with no traffic; negative when overspent)."""
    burned = burn_rate(bad_ratio, objective)
    return 1.0 if burned is None else 1.0 - burned


def slo_status(objective: float, requests: float | None, window_bad_ratio: float | None,
               bad_ratios: Mapping[str, float | None], alert_windows: Sequence[BurnAlertWindow]) -> SloStatus:
    """An SLO's standing from its bad-event ratio over the window and over each burn-rate window.

    ``state`` is ``no traffic`` without requests in the window, ``exhausted`` once no budget is left,
    ``burning`` while a burn-rate alert condition holds (both of its windows above the factor), else ``ok``.
    """
    traffic = requests is not None and not math.isnan(requests) and requests > 0
    window_ratio = _ratio(window_bad_ratio) if traffic else None
    rates = {w: burn_rate(r, objective) for w, r in bad_ratios.items()}
    burning = [f"{a.long}/{a.short}" for a in alert_windows
               if all((rates.get(w) or 0.0) > a.factor for w in (a.long, a.short))]
    left = budget_left(window_ratio, objective)
    if not traffic:
        state = NO_TRAFFIC
    elif left <= 0:
        state = EXHAUSTED
    elif burning:
        state = BURNING
    else:
        state = OK
    return SloStatus(objective=objective, requests=requests if traffic else 0.0,
                     attainment=None if window_ratio is None else 1.0 - window_ratio, budget_left=left,
                     burn_rates=rates, burning=burning, state=state)


def percent(value: float | None, digits: int = 3) -> str:
    """``0.99912`` as ``99.912%``; None as ``-`` (no traffic)."""
    if value is None:
        return "-"
    return f"{value * 100:.{digits}f}".rstrip("0").rstrip(".") + "%"
