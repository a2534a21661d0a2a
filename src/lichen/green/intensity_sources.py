"""Where the carbon intensity of a moment comes from: a chain of sources, each figure labelled and banded.

Order (the first that answers wins; docs/sustainability.md#carbon-intensity):

1. ``sustainability.carbon_intensity_g_per_kwh``: the user's fixed figure, no band (``spec``).
2. ``sustainability.intensity_api``: Electricity Maps, WattTime (``co2_aoer``) or the Carbon Aware SDK,
   asked at most every ``refresh_s``; an error or a timeout is an event and the next source answers until
   the next refresh.
3. ``sustainability.intensity_trace``: the trace's value at the moment (interpolated within its bound); a
   moment outside the trace or across a gap is an event and the next source answers.
4. ``sustainability.region`` in codecarbon's tables: an annual mean, given a ±30 % band (a stated
   convention: hourly intensity in most grids swings further than that around the annual mean; use a
   trace or an API where hours matter).

Only location-based figures are used, as the SCI requires. :func:`sustainability_issues` checks the
region and the trace file when a spec is validated, so ``lichen validate``/``lichen up`` refuse them with
a located error instead of a controller that degrades at run time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from lichen.control.energy_accounting import Estimate
from lichen.errors import DataError, SpecIssue
from lichen.green import intensity_apis, reference_tables
from lichen.green.intensity_traces import IntensityTrace, read_trace
from lichen.spec.documents import Document
from lichen.spec.models import AppSpec, IntensityApiSpec, SustainabilitySpec

TABLE_BAND = 0.30
"""the ± share shown around a table's annual mean (see the module docs)"""
Announce = Callable[[str, str], None]
"""``(reason, message)``: an event the controller records when a source fails or recovers"""


class LatestIntensity(Protocol):
    async def latest(self) -> intensity_apis.IntensityReading: ...

    async def forecast(self) -> list[intensity_apis.IntensityReading]: ...

    async def aclose(self) -> None: ...


def api_client(spec: IntensityApiSpec, region: str, env: Mapping[str, str]) -> LatestIntensity:
    """The client ``intensity_api`` names, with its credentials read from ``env`` (the controller's)."""
    zone = spec.zone or region
    kwargs: dict[str, Any] = {"timeout_s": spec.timeout_s}
    if spec.url:
        kwargs["base_url"] = spec.url.rstrip("/")
    if spec.provider == "electricitymaps":
        return intensity_apis.ElectricityMapsClient(zone, _secret(env, spec.token_env), **kwargs)
    if spec.provider == "watttime":
        return intensity_apis.WattTimeClient(zone, _secret(env, spec.username_env), _secret(env, spec.password_env),
                                             **kwargs)
    return intensity_apis.CarbonAwareSdkClient(zone, **kwargs)


async def api_forecast(spec: SustainabilitySpec, env: Mapping[str, str] | None = None
                       ) -> tuple[list[float], list[float], str]:
    """``intensity_api``'s forecast as (Unix seconds, g/kWh, source); raises
    :class:`~lichen.green.intensity_apis.IntensityApiError` naming what failed."""
    if spec.intensity_api is None:
        raise intensity_apis.IntensityApiError("no sustainability.intensity_api to ask for a forecast")
    client = api_client(spec.intensity_api, spec.region, os.environ if env is None else env)
    try:
        readings = await client.forecast()
    finally:
        await client.aclose()
    return [r.at_s for r in readings], [r.g_per_kwh for r in readings], readings[0].source


def _secret(env: Mapping[str, str], name: str | None) -> str:
    value = env.get(name or "", "")
    if not value:
        raise intensity_apis.IntensityApiError(f"sustainability.intensity_api: the variable {name} is not set in "
                                               "the controller's environment")
    return value


class IntensityChain:
    """The chain of the module docs; ``current(wall_s)`` never raises."""

    def __init__(self, spec: SustainabilitySpec, app_dir: Path, *, env: Mapping[str, str] | None = None,
                 announce: Announce | None = None, client: LatestIntensity | None = None) -> None:
        self.spec = spec
        self.announce = announce if announce is not None else (lambda reason, message: None)
        self.trace: IntensityTrace | None = None
        if spec.intensity_trace:  # both are checked when the spec is validated; a file changed since degrades
            try:
                self.trace = read_trace(app_dir / spec.intensity_trace)
            except (DataError, OSError) as exc:
                self.announce("IntensityTraceUnreadable", f"{exc}; using the next source")
        try:
            self.table = reference_tables.grid_intensity(spec.region)
        except reference_tables.TableError as exc:
            self.announce("IntensityRegionUnknown", f"{exc}; using the world average")
            self.table = reference_tables.grid_intensity("WORLD")
        self.client = client
        self.client_problem: str | None = None
        if client is None and spec.intensity_api is not None:
            try:
                self.client = api_client(spec.intensity_api, spec.region, os.environ if env is None else env)
            except intensity_apis.IntensityApiError as exc:
                self.client_problem = str(exc)
                self.announce("IntensityApiUnavailable", f"{exc}; using the next source")
        self.api_value: Estimate | None = None
        self.api_due_s = 0.0
        self.failing: dict[str, str] = {}  # source -> its standing problem (for describe)
        self.failing_reason: dict[str, str] = {}  # source -> the reason last announced: a repeat is not announced

    async def current(self, wall_s: float) -> Estimate:
        """The intensity (g/kWh) at ``wall_s`` (Unix seconds), from the first source that answers."""
        if self.spec.carbon_intensity_g_per_kwh is not None:
            return Estimate.measured(self.spec.carbon_intensity_g_per_kwh, "spec")
        if self.client is not None:
            if wall_s >= self.api_due_s:
                await self._refresh(wall_s)
            if self.api_value is not None:
                return self.api_value
        if self.trace is not None:
            try:
                value = self.trace.at(wall_s)
            except DataError as exc:
                self._failed("trace", "IntensityTraceUncovered", f"{exc}; using the next source")
            else:
                self._recovered("trace", f"the trace {self.trace.source} covers the moment again")
                return Estimate.measured(value, f"trace:{Path(self.trace.source).name}")
        value = self.table.g_per_kwh
        return Estimate(value, value * (1 - TABLE_BAND), value * (1 + TABLE_BAND), self.table.source)

    async def _refresh(self, wall_s: float) -> None:
        assert self.client is not None and self.spec.intensity_api is not None
        self.api_due_s = wall_s + self.spec.intensity_api.refresh_s
        try:
            reading = await self.client.latest()
        except intensity_apis.IntensityApiError as exc:
            self.api_value = None
            self._failed("api", "IntensityApiFailed", f"{exc}; using the next source until the next refresh")
            return
        self.api_value = Estimate.measured(reading.g_per_kwh, reading.source)
        self._recovered("api", f"{reading.source} answered again ({reading.g_per_kwh:.0f} g/kWh)")

    def _failed(self, source: str, reason: str, message: str) -> None:
        """Announce a source's failure once per kind (a trace that ran out fails at every moment after)."""
        self.failing[source] = message
        if self.failing_reason.get(source) != reason:
            self.failing_reason[source] = reason
            self.announce(reason, message)

    def _recovered(self, source: str, message: str) -> None:
        self.failing.pop(source, None)
        if self.failing_reason.pop(source, None) is not None:
            self.announce("IntensitySourceRecovered", message)

    def describe(self) -> dict[str, Any]:
        """The sources configured, in order, and each one's standing problem (for the report)."""
        chain: list[dict[str, Any]] = []
        if self.spec.carbon_intensity_g_per_kwh is not None:
            chain.append({"source": "spec", "g_per_kwh": self.spec.carbon_intensity_g_per_kwh})
        if self.spec.intensity_api is not None:
            chain.append({"source": f"api:{self.spec.intensity_api.provider}",
                          "problem": self.client_problem or self.failing.get("api")})
        if self.trace is not None:
            chain.append({"source": f"trace:{Path(self.trace.source).name}", "problem": self.failing.get("trace")})
        chain.append({"source": self.table.source, "g_per_kwh": self.table.g_per_kwh, "band": TABLE_BAND})
        return {"chain": chain}

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def sustainability_issues(doc: Document, spec: AppSpec, app_dir: Path) -> list[SpecIssue]:
    """The region must be in the tables and the trace file must parse (its own errors keep their file:line)."""
    section = spec.sustainability
    issues: list[SpecIssue] = []
    if not section.enabled:
        return issues
    try:
        reference_tables.grid_intensity(section.region)
    except reference_tables.TableError as exc:
        issues.append(doc.issue(("sustainability", "region"), str(exc), value=True))
    if section.intensity_trace:
        path = app_dir / section.intensity_trace
        if not path.is_file():
            issues.append(doc.issue(("sustainability", "intensity_trace"),
                                    f"trace file not found: {section.intensity_trace} (looked in {app_dir})",
                                    value=True))
        else:
            try:
                trace = read_trace(path)
            except DataError as exc:
                issues.append(doc.issue(("sustainability", "intensity_trace"), str(exc), value=True))
            else:
                gaps = trace.gaps()
                if gaps:
                    shown = ", ".join(f"lines {a}-{b} ({s / 60:g} min)" for a, b, s in gaps[:3])
                    issues.append(doc.issue(
                        ("sustainability", "intensity_trace"),
                        f"{section.intensity_trace} has {len(gaps)} gap(s) wider than {trace.default_max_gap_s() / 60:g} "
                        f"min, which are not interpolated: {shown}; moments inside them use the next source",
                        value=True, severity="warning"))
    api = section.intensity_api
    if api is not None:
        import os

        for field in ("token_env", "username_env", "password_env"):
            name = getattr(api, field)
            if name and not os.environ.get(name):
                issues.append(doc.issue(
                    ("sustainability", "intensity_api", field),
                    f"{name} is not set in this environment: the controller that lichen up starts from it could not "
                    "ask the API and would use the next source", value=True, severity="warning"))
    return issues


def sustainability_warnings(path: str | Path) -> list[SpecIssue]:
    """The warnings of :func:`sustainability_issues` for one spec file (none when it is not valid: its
    errors say why), for ``lichen validate`` and ``lichen up`` to print beside the unbuilt-field warnings."""
    from lichen.spec.documents import parse_document

    spec_path = Path(path)
    try:
        doc, _ = parse_document(spec_path.read_text(encoding="utf-8"), str(path))
        spec = AppSpec.model_validate(doc.data) if doc is not None else None
    except Exception:  # noqa: BLE001 - an invalid spec has its own errors
        return []
    if doc is None or spec is None:
        return []
    return [i for i in sustainability_issues(doc, spec, spec_path.resolve().parent) if i.severity == "warning"]
