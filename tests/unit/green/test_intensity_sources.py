"""The carbon-intensity chain (lichen.green.intensity_sources): the spec's fixed figure, a cached API, a trace and
the region's table, each failure and recovery announced once, and the spec checks ``lichen validate`` runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lichen.green.intensity_apis import ElectricityMapsClient, IntensityApiError, IntensityReading
from lichen.green.intensity_sources import (
    TABLE_BAND,
    IntensityChain,
    api_client,
    sustainability_issues,
    sustainability_warnings,
)
from lichen.green.reference_tables import grid_intensity
from lichen.spec.loading import check_spec
from lichen.spec.models import IntensityApiSpec, SustainabilitySpec

T0 = 1_796_342_400.0  # 2026-12-04T00:00:00Z
TRACE = ("datetime,carbon_intensity_g_per_kwh\n"
         "2026-12-04T00:00:00Z,200\n2026-12-04T00:30:00Z,300\n2026-12-04T01:00:00Z,100\n")
API = IntensityApiSpec(provider="carbon-aware-sdk", url="http://127.0.0.1:9", refresh_s=300)
SPEC = "app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n"


class FakeClient:
    """``latest()`` answers from a script: a reading, or an error to raise."""

    def __init__(self, *answers: float | IntensityApiError) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.closed = False

    async def latest(self) -> IntensityReading:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, IntensityApiError):
            raise answer
        return IntensityReading(answer, T0, "carbon-aware-sdk:eastus")

    async def aclose(self) -> None:
        self.closed = True


class Announcements:
    """The chain's ``announce`` callback, recording ``(reason, message)``; always truthy, as a callable should be."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def __call__(self, reason: str, message: str) -> None:
        self.said.append((reason, message))

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.said[index]

    def __len__(self) -> int:
        return len(self.said)

    def __bool__(self) -> bool:
        return True

    @property
    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.said]


def _chain(tmp_path: Path, announce: Announcements, client: FakeClient | None = None, **fields: object) \
        -> IntensityChain:
    (tmp_path / "trace.csv").write_text(TRACE, encoding="utf-8")
    return IntensityChain(SustainabilitySpec(**fields), tmp_path, env={}, announce=announce, client=client)


def _at(chain: IntensityChain, *times: float) -> list:
    async def run() -> list:
        return [await chain.current(t) for t in times]
    return asyncio.run(run())


def test_a_fixed_figure_in_the_spec_wins_over_every_source(tmp_path: Path) -> None:
    client, said = FakeClient(999.0), Announcements()
    chain = _chain(tmp_path, said, client, region="DE", carbon_intensity_g_per_kwh=123.0, intensity_api=API,
                   intensity_trace="trace.csv")
    (estimate,) = _at(chain, T0 + 900)
    assert (estimate.value, estimate.low, estimate.high, estimate.source) == (123.0, 123.0, 123.0, "spec")
    assert client.calls == 0 and said.reasons == []
    assert chain.describe()["chain"][0] == {"source": "spec", "g_per_kwh": 123.0}


def test_an_api_reading_is_cached_until_its_refresh_is_due(tmp_path: Path) -> None:
    client, said = FakeClient(310.0, 320.0), Announcements()
    chain = _chain(tmp_path, said, client, region="DE", intensity_api=API, intensity_trace="trace.csv")
    first, cached, refreshed, again = _at(chain, T0, T0 + 299, T0 + 300, T0 + 301)
    assert (first.value, first.low, first.high, first.source) == (310.0, 310.0, 310.0, "carbon-aware-sdk:eastus")
    assert cached == first and refreshed.value == 320.0 and again.value == 320.0
    assert client.calls == 2 and said.reasons == []
    asyncio.run(chain.aclose())
    assert client.closed


def test_an_api_error_is_announced_once_and_the_trace_answers(tmp_path: Path) -> None:
    client, said = FakeClient(IntensityApiError("carbon-aware-sdk:eastus: GET /emissions/bylocation: timed out")), \
        Announcements()
    chain = _chain(tmp_path, said, client, region="DE", intensity_api=API, intensity_trace="trace.csv")
    first, between, next_refresh = _at(chain, T0 + 900, T0 + 1000, T0 + 1200)
    assert (first.value, first.low, first.high, first.source) == (250.0, 250.0, 250.0, "trace:trace.csv")
    assert between.value == pytest.approx(200.0 + 1000 / 1800 * 100)  # 200 -> 300 over the first half hour
    assert next_refresh.source == "trace:trace.csv"
    assert client.calls == 2  # the failure is not retried before the next refresh
    assert said.reasons == ["IntensityApiFailed"]
    assert "timed out" in said[0][1] and "next source" in said[0][1]
    assert chain.describe()["chain"][0]["problem"] == said[0][1]


def test_the_api_answering_again_is_announced_as_a_recovery(tmp_path: Path) -> None:
    client, said = FakeClient(IntensityApiError("HTTP 503"), 280.0), Announcements()
    chain = _chain(tmp_path, said, client, region="DE", intensity_api=API)
    failed, recovered = _at(chain, T0, T0 + 300)
    assert failed.source.startswith("codecarbon") and recovered.value == 280.0
    assert said.reasons == ["IntensityApiFailed", "IntensitySourceRecovered"]
    assert "answered again" in said[1][1] and "280" in said[1][1]


def test_a_moment_outside_the_trace_falls_to_the_region_table_with_a_band(tmp_path: Path) -> None:
    said = Announcements()
    chain = _chain(tmp_path, said, region="DE", intensity_trace="trace.csv")
    germany = grid_intensity("DE")
    (before,) = _at(chain, T0 - 60)
    assert before.value == germany.g_per_kwh and before.source == germany.source
    assert before.low == pytest.approx(germany.g_per_kwh * (1 - TABLE_BAND))
    assert before.high == pytest.approx(germany.g_per_kwh * (1 + TABLE_BAND))
    assert said.reasons == ["IntensityTraceUncovered"] and "outside the trace" in said[0][1]
    (inside,) = _at(chain, T0 + 2700)
    assert (inside.value, inside.source) == (pytest.approx(200.0), "trace:trace.csv")
    assert said.reasons == ["IntensityTraceUncovered", "IntensitySourceRecovered"]
    assert "covers the moment again" in said[1][1]
    _at(chain, T0 + 1800)
    assert len(said) == 2  # no recovery without a failure before it


def test_a_trace_that_has_run_out_is_announced_once_not_every_sample(tmp_path: Path) -> None:
    said = Announcements()
    chain = _chain(tmp_path, said, region="DE", intensity_trace="trace.csv")
    _at(chain, T0 + 7200, T0 + 7205, T0 + 7210)
    assert said.reasons == ["IntensityTraceUncovered"]


def test_an_unknown_region_at_run_time_falls_back_to_the_world_average(tmp_path: Path) -> None:
    said = Announcements()
    chain = _chain(tmp_path, said, region="XX")
    assert said.reasons == ["IntensityRegionUnknown"]
    assert "'XX'" in said[0][1] and "world average" in said[0][1]
    world = grid_intensity("WORLD")
    (estimate,) = _at(chain, T0)
    assert (estimate.value, estimate.source) == (world.g_per_kwh, world.source)
    assert estimate.high == pytest.approx(world.g_per_kwh * 1.3)


@pytest.mark.parametrize(("name", "text"), [("missing.csv", None), ("bad.csv", TRACE + "yesterday,5\n")])
def test_an_unreadable_trace_is_announced_and_skipped(tmp_path: Path, name: str, text: str | None) -> None:
    if text is not None:
        (tmp_path / name).write_text(text, encoding="utf-8")
    said = Announcements()
    chain = IntensityChain(SustainabilitySpec(region="DE", intensity_trace=name), tmp_path, announce=said)
    assert said.reasons == ["IntensityTraceUnreadable"] and name in said[0][1]
    assert chain.trace is None
    (estimate,) = _at(chain, T0 + 900)
    assert estimate.source == grid_intensity("DE").source
    assert [entry["source"] for entry in chain.describe()["chain"]] == [grid_intensity("DE").source]


# ------------------------------------------------------------------- API clients


def test_a_missing_credential_variable_is_an_error_naming_it() -> None:
    spec = IntensityApiSpec(provider="electricitymaps", token_env="EM_TOKEN")
    with pytest.raises(IntensityApiError, match="EM_TOKEN"):
        api_client(spec, "DE", {})
    with pytest.raises(IntensityApiError, match="EM_TOKEN"):
        api_client(spec, "DE", {"EM_TOKEN": ""})
    client = api_client(spec, "DE", {"EM_TOKEN": "s3cret"})
    assert isinstance(client, ElectricityMapsClient) and client.zone == "DE"
    asyncio.run(client.aclose())


def test_a_chain_whose_api_lacks_its_credentials_announces_and_degrades(tmp_path: Path) -> None:
    said = Announcements()
    spec = SustainabilitySpec(region="DE", intensity_api=IntensityApiSpec(provider="watttime", username_env="WT_USER",
                                                                          password_env="WT_PASS"))
    chain = IntensityChain(spec, tmp_path, env={"WT_USER": "me"}, announce=said)
    assert said.reasons == ["IntensityApiUnavailable"] and "WT_PASS" in said[0][1]
    assert chain.client is None
    (estimate,) = _at(chain, T0)
    assert estimate.source == grid_intensity("DE").source
    assert chain.describe()["chain"][0] == {"source": "api:watttime", "problem": chain.client_problem}
    assert "WT_PASS" in (chain.client_problem or "")


# ------------------------------------------------------------------- spec checks


def _check(tmp_path: Path, block: str) -> list:
    path = tmp_path / "lichen.yaml"
    path.write_text(SPEC + block, encoding="utf-8")
    return check_spec(path, check_imports=False, data_checker=sustainability_issues)[1]


def test_an_unknown_region_is_located_at_its_line(tmp_path: Path) -> None:
    issues = _check(tmp_path, "sustainability:\n  region: XX\n")
    assert [(i.line, i.field) for i in issues] == [(6, "sustainability.region")]
    assert "'XX'" in issues[0].message and issues[0].column == 11


def test_a_missing_trace_file_is_named(tmp_path: Path) -> None:
    issues = _check(tmp_path, "sustainability:\n  region: DE\n  intensity_trace: traces/de.csv\n")
    assert [(i.line, i.field) for i in issues] == [(7, "sustainability.intensity_trace")]
    assert "traces/de.csv" in issues[0].message and "not found" in issues[0].message


def test_a_bad_trace_row_is_an_issue_with_the_traces_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "de.csv").write_text(TRACE + "2026-12-04T01:30:00Z,lots\n", encoding="utf-8")
    issues = _check(tmp_path, "sustainability:\n  intensity_trace: de.csv\n")
    assert [i.field for i in issues] == ["sustainability.intensity_trace"]
    assert "de.csv:5" in issues[0].message and "'lots' is not a number" in issues[0].message


def test_a_good_sustainability_section_has_no_issues(tmp_path: Path) -> None:
    (tmp_path / "de.csv").write_text(TRACE, encoding="utf-8")
    assert _check(tmp_path, "sustainability:\n  region: de\n  intensity_trace: de.csv\n") == []
    assert _check(tmp_path, "sustainability:\n  region: US-CA\n") == []
    # a disabled section is not checked at all
    assert _check(tmp_path, "sustainability:\n  enabled: false\n  region: XX\n") == []


def test_trace_gaps_and_unset_credentials_are_warnings_that_do_not_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EM_UNSET_TOKEN", raising=False)
    (tmp_path / "de.csv").write_text(TRACE + "2026-12-04T09:00:00Z,300\n", encoding="utf-8")  # a 7.5 h gap
    block = ("sustainability:\n  intensity_trace: de.csv\n  intensity_api:\n    provider: electricitymaps\n"
             "    token_env: EM_UNSET_TOKEN\n")
    assert _check(tmp_path, block) == []  # warnings never make the spec invalid
    warnings = sustainability_warnings(tmp_path / "lichen.yaml")
    assert [(w.field, w.severity) for w in warnings] == [
        ("sustainability.intensity_trace", "warning"), ("sustainability.intensity_api.token_env", "warning")]
    assert "lines 4-5" in warnings[0].message and "not interpolated" in warnings[0].message
    assert "EM_UNSET_TOKEN is not set" in warnings[1].message and warnings[1].line == 9
    monkeypatch.setenv("EM_UNSET_TOKEN", "x")
    assert [w.field for w in sustainability_warnings(tmp_path / "lichen.yaml")] == ["sustainability.intensity_trace"]
