"""Provider clients for live carbon intensity (lichen.green.intensity_apis) against a real local HTTP server that
speaks the Electricity Maps v3, WattTime v3 and Carbon Aware SDK formats: headers sent, exact values and units,
WattTime's single re-login, and one IntensityApiError line (status, no secret) for every way a call can fail."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lichen.green.intensity_apis import (
    PROVIDERS,
    CarbonAwareSdkClient,
    ElectricityMapsClient,
    IntensityApiError,
    WattTimeClient,
)

TOKEN, USER, PASSWORD = "em-secret-token", "alice", "wt-pass-word"
SLEEP = -1  # an answer status: hold the request until teardown
EM_OK = {"zone": "DE", "carbonIntensity": 302, "datetime": "2019-05-21T00:00:00.000Z", "isEstimated": False}
WT_OK = {"data": [{"point_time": "2026-04-01T00:00:00+00:00", "value": 412.5, "version": "1"},
                  {"point_time": "2026-04-01T00:05:00+00:00", "value": 999.0, "version": "1"}],
         "meta": {"region": "CAISO_NORTH", "signal_type": "co2_aoer", "units": "lbs_co2_per_mwh"}}
CAS_OK = [{"location": "eastus", "time": "2022-06-01T14:40:00+00:00", "rating": 380.0, "duration": "00:05:00"},
          {"location": "eastus", "time": "2022-06-01T14:45:00+00:00", "rating": 394.9, "duration": "00:05:00"},
          {"location": "eastus", "time": "2022-06-01T14:35:00", "rating": 370.0, "duration": "00:05:00"}]
T_2019_05_21 = 1_558_396_800.0
T_2026_04_01 = 1_775_001_600.0
T_2022_06_01_1445 = 1_654_094_700.0


@dataclass
class Fake:
    """What the server answers per path (a queue: the last answer repeats) and what it received."""
    url: str
    answers: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    received: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    logins: int = 0

    def answer(self, path: str, *answers: tuple[int, Any]) -> None:
        self.answers[path] = list(answers)

    def hits(self, path: str) -> list[tuple[dict[str, str], dict[str, str]]]:
        return [(query, headers) for p, query, headers in self.received if p == path]


def make_handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.received.append((parts.path, query, {k.lower(): v for k, v in self.headers.items()}))
            if parts.path == "/login":
                fake.logins += 1
            queue = fake.answers.get(parts.path, [(404, "no such path")])
            status, body = queue.pop(0) if len(queue) > 1 else queue[0]
            if status == SLEEP:
                fake.release.wait(10)
                return
            if parts.path == "/login" and body is None:
                body = {"token": f"tok-{fake.logins}"}
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and went away


@pytest.fixture
def fake() -> Iterator[Fake]:
    fake = Fake(url="")
    server = QuietServer(("127.0.0.1", 0), make_handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.answer("/v3/carbon-intensity/latest", (200, EM_OK))
    fake.answer("/login", (200, None))
    fake.answer("/v3/forecast", (200, WT_OK))
    fake.answer("/emissions/bylocation", (200, CAS_OK))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def latest(client: ElectricityMapsClient | WattTimeClient | CarbonAwareSdkClient) -> Any:
    try:
        return await client.latest()
    finally:
        await client.aclose()


def failure(client: ElectricityMapsClient | WattTimeClient | CarbonAwareSdkClient) -> str:
    with pytest.raises(IntensityApiError) as caught:
        run(latest(client))
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message and PASSWORD not in message and "tok-" not in message
    return message


def test_electricity_maps_sends_the_token_header_and_reads_intensity_and_time(fake: Fake) -> None:
    reading = run(latest(ElectricityMapsClient("DE", TOKEN, fake.url)))
    assert (reading.g_per_kwh, reading.at_s, reading.source) == (302.0, T_2019_05_21, "electricitymaps:DE")
    ((query, headers),) = fake.hits("/v3/carbon-intensity/latest")
    assert query == {"zone": "DE"} and headers["auth-token"] == TOKEN


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500])
def test_electricity_maps_error_statuses_name_the_status_and_path_but_not_the_token(fake: Fake, status: int) -> None:
    fake.answer("/v3/carbon-intensity/latest", (status, {"message": f"nope for token {TOKEN}"}))
    message = failure(ElectricityMapsClient("DE", TOKEN, fake.url))
    assert f"HTTP {status}" in message and "/v3/carbon-intensity/latest" in message and "nope for token" in message
    assert message.startswith("electricitymaps:DE: ")


@pytest.mark.parametrize(("body", "expected"), [
    ("{not json", "malformed JSON"),
    ({"zone": "DE", "datetime": "2019-05-21T00:00:00Z"}, "missing field 'carbonIntensity'"),
    ({"carbonIntensity": 302}, "missing field 'datetime'"),
    ({**EM_OK, "carbonIntensity": "302"}, "'carbonIntensity' is not a number"),
    ({**EM_OK, "carbonIntensity": True}, "'carbonIntensity' is not a number"),
    ({**EM_OK, "carbonIntensity": -1}, "'carbonIntensity' is not a finite non-negative number"),
    ('{"carbonIntensity": NaN, "datetime": "2019-05-21T00:00:00Z"}', "'carbonIntensity' is not a finite"),
    ({**EM_OK, "datetime": "yesterday"}, "'datetime' is not an ISO 8601 time"),
    ([EM_OK], "expected a JSON object"),
    ("null", "expected a JSON object"),
])
def test_electricity_maps_bad_bodies_are_named(fake: Fake, body: Any, expected: str) -> None:
    fake.answer("/v3/carbon-intensity/latest", (200, body))
    assert expected in failure(ElectricityMapsClient("DE", TOKEN, fake.url))


@pytest.mark.parametrize(("units", "g_per_kwh"), [("lbs_co2_per_mwh", 412.5 * 0.45359237), ("g_co2_per_kwh", 412.5)])
def test_watttime_logs_in_with_basic_auth_then_reads_the_first_aoer_point(fake: Fake, units: str,
                                                                          g_per_kwh: float) -> None:
    fake.answer("/v3/forecast", (200, {**WT_OK, "meta": {**WT_OK["meta"], "units": units}}))

    async def twice() -> list[Any]:
        client = WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url)
        try:
            return [await client.latest(), await client.latest()]
        finally:
            await client.aclose()

    first, second = run(twice())
    assert first == second and first.g_per_kwh == pytest.approx(g_per_kwh, rel=1e-12)
    assert (first.at_s, first.source) == (T_2026_04_01, "watttime:CAISO_NORTH")
    ((_, login_headers),) = fake.hits("/login")  # the token is cached: one login for two reads
    assert login_headers["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for query, headers in fake.hits("/v3/forecast"):
        assert query == {"region": "CAISO_NORTH", "signal_type": "co2_aoer"}
        assert headers["authorization"] == "Bearer tok-1"


def test_watttime_logs_in_again_once_after_a_401(fake: Fake) -> None:
    fake.answer("/v3/forecast", (401, "token expired"), (200, WT_OK))
    reading = run(latest(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url)))
    assert reading.g_per_kwh == pytest.approx(412.5 * 0.45359237)
    assert fake.logins == 2
    assert [h["authorization"] for _, h in fake.hits("/v3/forecast")] == ["Bearer tok-1", "Bearer tok-2"]


def test_watttime_a_second_401_is_an_error_without_a_third_try(fake: Fake) -> None:
    fake.answer("/v3/forecast", (401, "token expired"))
    message = failure(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url))
    assert "HTTP 401" in message and "/v3/forecast" in message
    assert fake.logins == 2 and len(fake.hits("/v3/forecast")) == 2


def test_watttime_a_refused_login_names_login_and_not_the_password(fake: Fake) -> None:
    fake.answer("/login", (403, f"bad password {PASSWORD}"))
    message = failure(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url))
    assert "GET /login: HTTP 403" in message and "bad password ***" in message
    assert not fake.hits("/v3/forecast")


@pytest.mark.parametrize(("body", "expected"), [
    ({**WT_OK, "meta": {"units": "kg_co2_per_mwh"}}, "unknown units 'kg_co2_per_mwh'"),
    ({**WT_OK, "meta": {}}, "missing field 'units'"),
    ({**WT_OK, "data": []}, "'data' is not a non-empty list"),
    ({**WT_OK, "data": [{"point_time": "2026-04-01T00:00:00Z"}]}, "missing field 'value'"),
    ({**WT_OK, "data": [{"point_time": "2026-04-01T00:00:00Z", "value": None}]}, "'data[0].value' is not a number"),
])
def test_watttime_bad_bodies_are_named(fake: Fake, body: Any, expected: str) -> None:
    fake.answer("/v3/forecast", (200, body))
    assert expected in failure(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url))


def test_carbon_aware_sdk_asks_for_the_last_hour_and_takes_the_latest_entry(fake: Fake) -> None:
    now_s = T_2022_06_01_1445 + 120
    reading = run(latest(CarbonAwareSdkClient("eastus", fake.url, clock=lambda: now_s)))
    assert (reading.g_per_kwh, reading.at_s, reading.source) == (394.9, T_2022_06_01_1445, "carbon-aware-sdk:eastus")
    ((query, _),) = fake.hits("/emissions/bylocation")
    assert query == {"location": "eastus", "time": "2022-06-01T13:47:00Z", "toTime": "2022-06-01T14:47:00Z"}


@pytest.mark.parametrize(("answer", "expected"), [
    ((200, []), "no data for location 'eastus' in the last hour"),
    ((200, {"rating": 1}), "expected a JSON list"),
    ((200, [{"time": "2022-06-01T14:45:00Z"}]), "missing field 'rating'"),
    ((400, {"title": "unknown location"}), "HTTP 400"),
    ((500, "boom"), "HTTP 500: 'boom'"),
])
def test_carbon_aware_sdk_failures(fake: Fake, answer: tuple[int, Any], expected: str) -> None:
    fake.answer("/emissions/bylocation", answer)
    assert expected in failure(CarbonAwareSdkClient("eastus", fake.url, clock=lambda: T_2022_06_01_1445))


def test_a_server_slower_than_the_timeout_is_an_error_naming_the_timeout(fake: Fake) -> None:
    fake.answer("/v3/carbon-intensity/latest", (SLEEP, None))
    started = time.monotonic()
    message = failure(ElectricityMapsClient("DE", TOKEN, fake.url, timeout_s=0.2))
    assert "timed out after 0.2 s" in message and time.monotonic() - started < 2.0


def test_a_closed_port_is_an_error_naming_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = failure(CarbonAwareSdkClient("eastus", f"http://127.0.0.1:{port}"))
    assert f"cannot connect to 127.0.0.1:{port}" in message and "/emissions/bylocation" in message


def test_aclose_closes_only_a_client_it_created_and_repr_hides_secrets(fake: Fake) -> None:
    async def scenario() -> tuple[bool, bool]:
        shared = httpx.AsyncClient()
        given = WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url, client=shared)
        own = ElectricityMapsClient("DE", TOKEN, fake.url)
        await given.latest()
        assert PASSWORD not in repr(given) and "tok-1" not in repr(given) and "watttime:CAISO_NORTH" in repr(given)
        assert TOKEN not in repr(own)
        await given.aclose()
        await own.aclose()
        closed = (shared.is_closed, own._client.is_closed)
        await shared.aclose()
        return closed

    assert run(scenario()) == (False, True)


def test_providers_name_the_three_clients() -> None:
    assert PROVIDERS == {"electricitymaps": ElectricityMapsClient, "watttime": WattTimeClient,
                         "carbon-aware-sdk": CarbonAwareSdkClient}


EM_FORECAST = {"zone": "DE", "forecast": [{"carbonIntensity": 250, "datetime": "2019-05-21T01:00:00.000Z"},
                                          {"carbonIntensity": 302, "datetime": "2019-05-21T00:00:00.000Z"}],
               "updatedAt": "2019-05-21T00:00:00.000Z"}
CAS_FORECAST = [{"location": "eastus", "dataStartAt": "2022-06-01T14:45:00Z", "windowSize": 5,
                 "forecastData": [{"location": "eastus", "timestamp": "2022-06-01T14:45:00Z", "duration": 5,
                                   "value": 394.9},
                                  {"location": "eastus", "timestamp": "2022-06-01T14:50:00Z", "duration": 5,
                                   "value": 380.0}]}]


async def forecast(client: ElectricityMapsClient | WattTimeClient | CarbonAwareSdkClient) -> Any:
    try:
        return await client.forecast()
    finally:
        await client.aclose()


def test_each_provider_gives_its_forecast_in_time_order(fake: Fake) -> None:
    fake.answer("/v3/carbon-intensity/forecast", (200, EM_FORECAST))
    fake.answer("/emissions/forecasts/current", (200, CAS_FORECAST))
    em = run(forecast(ElectricityMapsClient("DE", TOKEN, fake.url)))
    assert [(r.at_s, r.g_per_kwh) for r in em] == [(T_2019_05_21, 302.0), (T_2019_05_21 + 3600, 250.0)]
    ((query, headers),) = fake.hits("/v3/carbon-intensity/forecast")
    assert query == {"zone": "DE"} and headers["auth-token"] == TOKEN
    wt = run(forecast(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url)))
    assert [r.g_per_kwh for r in wt] == pytest.approx([412.5 * 0.45359237, 999.0 * 0.45359237])
    assert [r.at_s for r in wt] == [T_2026_04_01, T_2026_04_01 + 300]
    cas = run(forecast(CarbonAwareSdkClient("eastus", fake.url)))
    assert [(r.at_s, r.g_per_kwh, r.source) for r in cas] == [
        (T_2022_06_01_1445, 394.9, "carbon-aware-sdk:eastus"), (T_2022_06_01_1445 + 300, 380.0,
                                                               "carbon-aware-sdk:eastus")]
    assert fake.hits("/emissions/forecasts/current")[0][0] == {"location": "eastus"}


@pytest.mark.parametrize(("path", "body", "client", "expected"), [
    ("/v3/carbon-intensity/forecast", {"forecast": []}, "em", "'forecast' is not a non-empty list"),
    ("/v3/carbon-intensity/forecast", {"forecast": [{"datetime": "2019-05-21T00:00:00Z"}]}, "em",
     "missing field 'carbonIntensity'"),
    ("/emissions/forecasts/current", [{"forecastData": [{"timestamp": "x", "value": 1}]}], "cas",
     "'[0].forecastData[0].timestamp' is not an ISO 8601 time"),
    ("/emissions/forecasts/current", [], "cas", "'(the answer)' is not a non-empty list"),
])
def test_bad_forecasts_are_named(fake: Fake, path: str, body: Any, client: str, expected: str) -> None:
    fake.answer(path, (200, body))
    made = ElectricityMapsClient("DE", TOKEN, fake.url) if client == "em" else CarbonAwareSdkClient("eastus", fake.url)
    with pytest.raises(IntensityApiError) as caught:
        run(forecast(made))
    assert expected in str(caught.value) and TOKEN not in str(caught.value)


def test_watttime_a_bad_point_further_out_spoils_the_forecast_but_not_the_current_reading(fake: Fake) -> None:
    body = {**WT_OK, "data": [WT_OK["data"][0], {"point_time": "2026-04-01T00:05:00Z", "value": None}]}
    fake.answer("/v3/forecast", (200, body))
    assert run(latest(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url))).at_s == T_2026_04_01
    with pytest.raises(IntensityApiError, match=r"'data\[1\].value' is not a number"):
        run(forecast(WattTimeClient("CAISO_NORTH", USER, PASSWORD, fake.url)))
