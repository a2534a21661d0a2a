"""The replica contract: ReplicaSettings is the one parser of the LICHEN_* environment, on both sides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lichen.errors import ConfigError
from lichen import Service, endpoint
from lichen.sdk.settings import ReplicaSettings
from lichen.testing import ServiceClient

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sdk.md"
LICHEN = str(Path(sys.executable).with_name("lichen"))


def full() -> ReplicaSettings:
    return ReplicaSettings(
        service="api", replica="api-7f3a-0", revision="7f3a", port=41234, grace_s=2.5, drain_s=0.25,
        timeout_s=0.1 + 0.2, max_concurrency=16, metrics_path="/internal/metrics", slo_latency_ms=(200.0, 512.5),
        app_dir="/srv/app", controller="/srv/app", gateway_url="http://127.0.0.1:8080",
        service_urls={"sentiment": "http://127.0.0.1:8080/sentiment", "api": "http://127.0.0.1:8080"},
        secret_names=("API_TOKEN", "DB_PASSWORD"), redact="hash:query:user_id,drop:body:email",
        redact_salt_file="/srv/app/.lichen/redact.salt", trace_endpoint="http://127.0.0.1:4318/v1/traces",
        trace_sampling_ratio=0.25,
    )


def test_to_env_then_from_env_gives_the_same_settings() -> None:
    settings = full()
    env = settings.to_env()
    assert ReplicaSettings.from_env(env) == settings
    assert env["LICHEN_GRACE_S"] == "2.5" and env["LICHEN_SLO_LATENCY_MS"] == "200,512.5"
    assert env["LICHEN_TIMEOUT_S"] == repr(0.1 + 0.2)  # exact, not rounded to six digits by :g
    assert set(env) == set(ReplicaSettings.env_names())  # every field is one variable


def test_unset_or_empty_variables_take_the_defaults_and_are_not_written() -> None:
    settings = ReplicaSettings.from_env({"LICHEN_GRACE_S": "", "PATH": "/bin", "LICHEN_JOB": "train"})
    assert settings == ReplicaSettings()
    assert (settings.port, settings.grace_s, settings.drain_s, settings.timeout_s, settings.max_concurrency,
            settings.metrics_path, settings.slo_latency_ms) == (8000, 30.0, 1.0, 30.0, 64, "/metrics", ())
    assert "LICHEN_SERVICE" not in settings.to_env() and settings.log_fields() == {}
    assert full().log_fields() == {"service": "api", "replica": "api-7f3a-0", "revision": "7f3a"}


def test_service_urls_are_name_url_pairs_and_urls_lose_a_trailing_slash() -> None:
    settings = ReplicaSettings.from_env({"LICHEN_GATEWAY_URL": "http://127.0.0.1:8080/",
                                         "LICHEN_SERVICE_URLS": "a=http://127.0.0.1:8080/a/, b=http://127.0.0.1:8080"})
    assert settings.gateway_url == "http://127.0.0.1:8080"
    assert settings.service_urls == {"a": "http://127.0.0.1:8080/a", "b": "http://127.0.0.1:8080"}
    assert settings.to_env()["LICHEN_SERVICE_URLS"] == "a=http://127.0.0.1:8080/a,b=http://127.0.0.1:8080"
    assert "LICHEN_SERVICE_URLS" not in ReplicaSettings().to_env()  # none: not written


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("LICHEN_GRACE_S", "soon", "must be a finite number of seconds >= 0, got 'soon'"),
        ("LICHEN_GRACE_S", "-1", "must be a finite number of seconds >= 0"),
        ("LICHEN_DRAIN_S", "inf", "must be a finite number of seconds >= 0"),
        ("LICHEN_TIMEOUT_S", "0", "must be a positive number of seconds, got '0'"),
        ("LICHEN_TIMEOUT_S", "nan", "must be a positive number of seconds"),
        ("LICHEN_MAX_CONCURRENCY", "2.5", "must be a positive whole number, got '2.5'"),
        ("LICHEN_MAX_CONCURRENCY", "-1", "must be a positive whole number"),
        ("LICHEN_PORT", "70000", "must be a TCP port from 1 to 65535"),
        ("LICHEN_METRICS_PATH", "/readyz", "must be a URL path such as /metrics, other than /healthz"),
        ("LICHEN_METRICS_PATH", "metrics", "must be a URL path"),
        ("LICHEN_SLO_LATENCY_MS", "200,soon", "must be milliseconds > 0, comma-separated; got '200,soon'"),
        ("LICHEN_SLO_LATENCY_MS", "-5", "must be milliseconds > 0"),
        ("LICHEN_SERVICE", "a\tb", "must be a non-empty printable name"),
        ("LICHEN_GATEWAY_URL", "localhost:8080", "must be an http:// or https:// URL with no query"),
        ("LICHEN_GATEWAY_URL", "http://h:1/?a=b", "must be an http:// or https:// URL with no query"),
        ("LICHEN_SERVICE_URLS", "sentiment", "must be NAME=URL pairs, comma-separated; got 'sentiment'"),
        ("LICHEN_SERVICE_URLS", "a=ftp://h", "must be an http:// or https:// URL"),
    ],
)
def test_a_bad_value_is_one_config_error_naming_the_variable(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReplicaSettings.from_env({name: raw})
    assert caught.value.where == f"env {name}" and message in caught.value.message
    assert caught.value.exit_code == 2 and str(caught.value).startswith(f"env {name}: must be")


def test_the_controller_side_goes_through_the_same_validator() -> None:
    with pytest.raises(ConfigError, match="env LICHEN_TIMEOUT_S: must be a positive number of seconds, got 0"):
        ReplicaSettings(timeout_s=0)
    with pytest.raises(ConfigError, match="grace is not part of the replica contract"):
        ReplicaSettings(grace=3)


def test_flags_override_the_env_and_a_bad_flag_is_located_at_the_flag() -> None:
    settings = ReplicaSettings.from_env({"LICHEN_GRACE_S": "20", "LICHEN_DRAIN_S": "3", "LICHEN_PORT": "9000"})
    overridden = settings.overridden(grace_s=4, drain_s=None, port=None)
    assert (overridden.grace_s, overridden.drain_s, overridden.port) == (4.0, 3.0, 9000)
    with pytest.raises(ConfigError) as caught:
        settings.overridden(grace_s=-1)
    assert str(caught.value) == "--grace-s: must be a finite number of seconds >= 0, got -1"


def test_the_drain_window_is_at_most_half_the_grace() -> None:
    assert ReplicaSettings(grace_s=30, drain_s=1).drain_window_s == 1.0
    assert ReplicaSettings(grace_s=1, drain_s=5).drain_window_s == 0.5
    assert ReplicaSettings(grace_s=0, drain_s=1).drain_window_s == 0.0


def test_the_doc_table_is_the_object() -> None:
    """docs/sdk.md shows ReplicaSettings.markdown_table() verbatim under its heading; regenerate it from there."""
    section = DOCS.read_text().split("## Environment a supervised replica reads", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"
    assert table == ReplicaSettings.markdown_table()
    for name in ReplicaSettings.env_names():
        assert f"| `{name}` |" in table


def test_endpoints_without_limits_take_the_contracts_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    class Limits(Service):
        @endpoint("/default")
        def default(self) -> dict:
            return {}

        @endpoint("/own", timeout_s=1, max_concurrency=2)
        def own(self) -> dict:
            return {}

    monkeypatch.setenv("LICHEN_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LICHEN_MAX_CONCURRENCY", "16")
    with ServiceClient(Limits) as client:
        described = {e["path"]: (e["timeout_s"], e["max_concurrency"]) for e in client.get("/.well-known/lichen").json()["endpoints"]}
    assert described == {"/default": (2.5, 16), "/own": (1, 2)}
    monkeypatch.setenv("LICHEN_MAX_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="env LICHEN_MAX_CONCURRENCY: must be a positive whole number"):
        ServiceClient(Limits).__enter__()


def test_lichen_serve_with_a_bad_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LICHEN_")} | {"LICHEN_GRACE_S": "soon"}
    result = subprocess.run([LICHEN, "serve", "nomodule:X", "--app-dir", str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: env LICHEN_GRACE_S: must be a finite number of seconds >= 0, "
                                                  "got 'soon'"]
