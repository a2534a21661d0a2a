"""Live grid carbon intensity from provider APIs: the current location-based figure, in gCO₂e/kWh.

One async client per provider, each with ``latest() -> IntensityReading`` and
``forecast() -> list[IntensityReading]`` (the provider's forecast, in time
order, for planning carbon-aware jobs):

* :class:`ElectricityMapsClient` — Electricity Maps v3,
  ``GET /v3/carbon-intensity/latest?zone=DE`` with an ``auth-token`` header;
  ``carbonIntensity`` (g/kWh) at ``datetime``; the forecast is
  ``GET /v3/carbon-intensity/forecast?zone=DE``, a ``forecast`` list of the same.
* :class:`WattTimeClient` — WattTime v3: ``GET /login`` with HTTP Basic auth
  gives a bearer token (valid ~30 min, cached, renewed once on a 401), then
  ``GET /v3/forecast?region=…&signal_type=co2_aoer``; the first point is the
  current 5-minute interval, and all of them are the forecast (24 h). The signal is **co2_aoer**, the *average*
  operating emissions rate, which is location-based as the SCI requires.
  ``co2_moer`` (marginal) answers a different question (what one more kWh
  would emit) and must not be used here. ``lbs_co2_per_mwh`` is converted to
  g/kWh (× 0.45359237); other units than that and ``g_co2_per_kwh`` are refused.
* :class:`CarbonAwareSdkClient` — the Green Software Foundation's Carbon Aware
  SDK WebAPI, ``GET /emissions/bylocation`` over the last hour; the entry with
  the latest ``time`` wins, its ``rating`` is g/kWh. The forecast is
  ``GET /emissions/forecasts/current?location=…``: the first entry's
  ``forecastData``, each a ``timestamp`` and a ``value`` in g/kWh.

Every failure (HTTP status, timeout, refused connection, malformed JSON, a
missing or invalid field, unknown units) is one :class:`IntensityApiError`
line naming the provider, the URL path and what was wrong — never a token or
password. Times are ISO 8601 (UTC when no zone is given).
Reading CSV exports instead is :mod:`lichen.green.intensity_traces`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger("lichen.green.intensity_apis")

G_PER_KWH_PER_LB_PER_MWH = 0.45359237  # 1 lb = 453.59237 g; 1 MWh = 1000 kWh
WATTTIME_TOKEN_MAX_AGE_S = 25 * 60.0  # tokens last ~30 min; renew a little before
CARBON_AWARE_WINDOW_S = 3600.0
BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class IntensityReading:
    g_per_kwh: float
    at_s: float
    """Unix seconds of the data point the provider reports"""
    source: str
    """e.g. ``electricitymaps:DE``, ``watttime:CAISO_NORTH``, ``carbon-aware-sdk:eastus``"""


class IntensityApiError(Exception):
    """One line: the provider, the URL path (never a token or password), and what was wrong."""


class _StatusError(IntensityApiError):
    """A non-2xx answer; ``status`` lets WattTime log in again after a 401."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _HttpSource:
    """The shared part: one GET returning JSON, every failure turned into an :class:`IntensityApiError`."""

    def __init__(self, source: str, base_url: str, timeout_s: float, client: httpx.AsyncClient | None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Closes the HTTP client only if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def path(self, endpoint: str) -> str:
        """The URL path shown in errors: the base URL's own path prefix, if any, plus the endpoint; no query."""
        return httpx.URL(self.base_url + endpoint).path

    def error(self, path: str, what: str) -> IntensityApiError:
        return IntensityApiError(self._redact(f"{self.source}: GET {path}: {what}"))

    async def get(self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None,
                  auth: tuple[str, str] | None = None, hints: Mapping[int, str] | None = None) -> Any:
        """The parsed JSON of a 2xx answer; anything else raises (``hints`` explain a status in the message)."""
        url = self.base_url + path
        shown = self.path(path)
        try:
            response = await self._client.get(url, params=dict(params), headers=dict(headers or {}), auth=auth,
                                              timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            raise self.error(shown, f"timed out after {self.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise self.error(shown, f"cannot connect to {httpx.URL(url).netloc.decode()}: {exc}") from None
        except httpx.HTTPError as exc:
            raise self.error(shown, f"{type(exc).__name__}: {exc}") from None
        excerpt = " ".join(response.text.split())[:BODY_EXCERPT_CHARS]
        status = response.status_code
        if not response.is_success:
            hint = (hints or {}).get(status, "")
            raise _StatusError(self._redact(f"{self.source}: GET {shown}: HTTP {status}{hint}: {excerpt!r}"), status)
        try:
            return response.json()
        except ValueError:
            raise self.error(shown, f"malformed JSON (HTTP {status}): {excerpt!r}") from None


def _g_per_kwh(value: object, field: str, fail: Callable[[str], IntensityApiError]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"field {field!r} is not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise fail(f"field {field!r} is not a finite non-negative number: {value!r}")
    return number


def _time_s(value: object, field: str, fail: Callable[[str], IntensityApiError]) -> float:
    if not isinstance(value, str):
        raise fail(f"field {field!r} is not an ISO 8601 string: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"field {field!r} is not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _field(obj: object, key: str, fail: Callable[[str], IntensityApiError]) -> Any:
    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object with {key!r}, got {type(obj).__name__}")
    if key not in obj:
        raise fail(f"missing field {key!r}")
    return obj[key]


STATUS_HINTS = {401: " (bad credentials)", 403: " (forbidden: token or plan)", 404: " (unknown zone/region)",
                429: " (rate limited)"}


def _points(value: object, field: str, fail: Callable[[str], IntensityApiError]) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise fail(f"field {field!r} is not a non-empty list")
    return value


def _in_order(readings: list[IntensityReading]) -> list[IntensityReading]:
    return sorted(readings, key=lambda r: r.at_s)


class ElectricityMapsClient(_HttpSource):
    PATH = "/v3/carbon-intensity/latest"
    FORECAST_PATH = "/v3/carbon-intensity/forecast"

    def __init__(self, zone: str, token: str, base_url: str = "https://api.electricitymap.org", *,
                 timeout_s: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(f"electricitymaps:{zone}", base_url, timeout_s, client, secrets=(token,))
        self.zone = zone
        self._token = token

    async def latest(self) -> IntensityReading:
        path = self.path(self.PATH)
        body = await self.get(self.PATH, {"zone": self.zone}, headers={"auth-token": self._token}, hints=STATUS_HINTS)

        def fail(what: str) -> IntensityApiError:
            return self.error(path, what)

        return IntensityReading(g_per_kwh=_g_per_kwh(_field(body, "carbonIntensity", fail), "carbonIntensity", fail),
                                at_s=_time_s(_field(body, "datetime", fail), "datetime", fail), source=self.source)

    async def forecast(self) -> list[IntensityReading]:
        path = self.path(self.FORECAST_PATH)
        body = await self.get(self.FORECAST_PATH, {"zone": self.zone}, headers={"auth-token": self._token},
                              hints=STATUS_HINTS)

        def fail(what: str) -> IntensityApiError:
            return self.error(path, what)

        points = _points(_field(body, "forecast", fail), "forecast", fail)
        return _in_order([IntensityReading(
            _g_per_kwh(_field(p, "carbonIntensity", fail), f"forecast[{i}].carbonIntensity", fail),
            _time_s(_field(p, "datetime", fail), f"forecast[{i}].datetime", fail), self.source)
            for i, p in enumerate(points)])


class WattTimeClient(_HttpSource):
    LOGIN_PATH = "/login"
    DATA_PATH = "/v3/forecast"
    SIGNAL_TYPE = "co2_aoer"  # average (location-based); never co2_moer (marginal)

    def __init__(self, region: str, username: str, password: str, base_url: str = "https://api.watttime.org", *,
                 timeout_s: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(f"watttime:{region}", base_url, timeout_s, client, secrets=(password,))
        self.region = region
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_at_s = 0.0
        self._login_lock = asyncio.Lock()

    async def _login(self) -> str:
        async with self._login_lock:
            path = self.path(self.LOGIN_PATH)
            body = await self.get(self.LOGIN_PATH, {}, auth=(self._username, self._password),
                                  hints={401: " (login refused)", 403: " (login refused)"})
            token = _field(body, "token", lambda what: self.error(path, what))
            if not isinstance(token, str) or not token:
                raise self.error(path, "field 'token' is not a non-empty string")
            self._token, self._token_at_s = token, time.monotonic()
            self._secrets = tuple(s for s in (self._password, token) if s)
            return token

    async def _token_now(self) -> str:
        if self._token is None or time.monotonic() - self._token_at_s > WATTTIME_TOKEN_MAX_AGE_S:
            return await self._login()
        return self._token

    async def _aoer(self, first_only: bool) -> list[IntensityReading]:
        path = self.path(self.DATA_PATH)
        params = {"region": self.region, "signal_type": self.SIGNAL_TYPE}
        token = await self._token_now()
        try:
            body = await self.get(self.DATA_PATH, params, headers={"Authorization": f"Bearer {token}"},
                                  hints=STATUS_HINTS)
        except _StatusError as exc:
            if exc.status != 401:
                raise
            log.info("%s: token refused, logging in again", self.source)
            token = await self._login()
            body = await self.get(self.DATA_PATH, params, headers={"Authorization": f"Bearer {token}"},
                                  hints=STATUS_HINTS)

        def fail(what: str) -> IntensityApiError:
            return self.error(path, what)

        data = _points(_field(body, "data", fail), "data", fail)
        units = _field(_field(body, "meta", fail), "units", fail)
        if units == "lbs_co2_per_mwh":
            factor = G_PER_KWH_PER_LB_PER_MWH
        elif units == "g_co2_per_kwh":
            factor = 1.0
        else:
            raise fail(f"unknown units {units!r} (expected 'lbs_co2_per_mwh' or 'g_co2_per_kwh')")
        return [IntensityReading(g_per_kwh=_g_per_kwh(_field(point, "value", fail), f"data[{i}].value", fail) * factor,
                                 at_s=_time_s(_field(point, "point_time", fail), f"data[{i}].point_time", fail),
                                 source=self.source) for i, point in enumerate(data[:1] if first_only else data)]

    async def latest(self) -> IntensityReading:
        return (await self._aoer(first_only=True))[0]  # a bad point further out never spoils the current one

    async def forecast(self) -> list[IntensityReading]:
        return _in_order(await self._aoer(first_only=False))


class CarbonAwareSdkClient(_HttpSource):
    PATH = "/emissions/bylocation"
    FORECAST_PATH = "/emissions/forecasts/current"

    def __init__(self, location: str, base_url: str = "http://localhost:8080", *, timeout_s: float = 5.0,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(f"carbon-aware-sdk:{location}", base_url, timeout_s, client)
        self.location = location
        self._clock = clock

    @staticmethod
    def _iso(at_s: float) -> str:
        return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def latest(self) -> IntensityReading:
        path = self.path(self.PATH)
        now_s = self._clock()
        params = {"location": self.location, "time": self._iso(now_s - CARBON_AWARE_WINDOW_S),
                  "toTime": self._iso(now_s)}
        body = await self.get(self.PATH, params, hints={400: " (bad request: location or time)"})

        def fail(what: str) -> IntensityApiError:
            return self.error(path, what)

        if not isinstance(body, list):
            raise fail(f"expected a JSON list, got {type(body).__name__}")
        if not body:
            raise fail(f"no data for location {self.location!r} in the last hour")
        timed = [(_time_s(_field(entry, "time", fail), f"[{i}].time", fail), i) for i, entry in enumerate(body)]
        at_s, i = max(timed)
        return IntensityReading(g_per_kwh=_g_per_kwh(_field(body[i], "rating", fail), f"[{i}].rating", fail),
                                at_s=at_s, source=self.source)

    async def forecast(self) -> list[IntensityReading]:
        path = self.path(self.FORECAST_PATH)
        body = await self.get(self.FORECAST_PATH, {"location": self.location},
                              hints={400: " (bad request: location)"})

        def fail(what: str) -> IntensityApiError:
            return self.error(path, what)

        first = _points(body, "(the answer)", fail)[0]
        points = _points(_field(first, "forecastData", fail), "[0].forecastData", fail)
        return _in_order([IntensityReading(
            _g_per_kwh(_field(p, "value", fail), f"[0].forecastData[{i}].value", fail),
            _time_s(_field(p, "timestamp", fail), f"[0].forecastData[{i}].timestamp", fail), self.source)
            for i, p in enumerate(points)])


PROVIDERS: dict[str, type[ElectricityMapsClient | WattTimeClient | CarbonAwareSdkClient]] = {
    "electricitymaps": ElectricityMapsClient,
    "watttime": WattTimeClient,
    "carbon-aware-sdk": CarbonAwareSdkClient,
}
