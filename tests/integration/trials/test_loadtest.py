"""`lichen loadtest` against a real server that stalls, hangs, resets and fails: the open-loop generator shows
queueing a closed-loop one would hide, and counts each kind of failure."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lichen.control.load_profiles import arrival_offsets, shaped
from lichen.trials.load_generation import LoadEngine, build_target
from waiting import free_port

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "misbehaving_server.py"), str(port)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "listening"
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def _run(url: str, routes: list[str], rate: float, duration_s: float, **options) -> object:
    engine = LoadEngine(build_target(url, routes), arrival_offsets(shaped("constant", rate, duration_s)), **options)
    return asyncio.run(engine.run())


def test_a_stall_shows_in_every_request_that_queued_behind_it(server: str) -> None:
    """One 300 ms stop-the-world pause at 200 req/s: about 60 requests were due while the server was stopped,
    and each one's latency counts from when it was due. A closed-loop tool on one connection would record one
    slow request and simply send fewer."""
    result = _run(server, ["/ok"] * 199 + ["/stall"], rate=200.0, duration_s=2.0, max_connections=1)
    over_100ms = sum(count for value, count in _values(result.latency) if value > 100_000)
    assert result.answered == result.scheduled == 400 and not result.failures
    assert result.latency.get_max_value() >= 250_000  # the stalled request itself
    assert over_100ms >= 25  # and the queue behind it: ~40 requests were due in the last 200 ms of the stall
    assert result.elapsed_s < 3.0  # the schedule held: the generator did not slow down with the server


def _values(histogram) -> list[tuple[int, int]]:
    return [(item.value_iterated_to, item.count_added_in_this_iter_step)
            for item in histogram.get_recorded_iterator()]


def test_failures_are_counted_by_kind(server: str) -> None:
    port = free_port()  # nothing listens there
    refused = _run(f"http://127.0.0.1:{port}", ["/"], rate=50.0, duration_s=0.4)
    assert refused.failures == {"connect": refused.scheduled} and refused.answered == 0
    hung = _run(server, ["/hang"], rate=20.0, duration_s=0.3, timeout_s=0.3)
    assert hung.failures == {"timeout": hung.scheduled} and hung.scheduled == 6
    reset = _run(server, ["/reset"], rate=20.0, duration_s=0.3)
    assert reset.failures == {"reset": reset.scheduled}
    mixed = _run(server, ["/ok", "/status/503"], rate=100.0, duration_s=0.4)
    assert mixed.statuses == {200: 20, 503: 20} and not mixed.failures


def test_the_cli_reports_json_writes_the_per_request_log_and_gates_on_thresholds(server: str, tmp_path: Path) -> None:
    log = tmp_path / "requests.csv"
    done = subprocess.run([*LICHEN, "loadtest", "--url", server, "--route", "/ok", "--route", "/status/503",
                           "--rate", "100", "--duration", "1s", "--profile", "step", "--json", "--log", str(log)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scheduled"] == report["answered"] == 60  # a 5-step rise to 100 req/s over 1 s
    assert report["statuses"] == {"200": 30, "503": 30} and report["error_ratio"] == 0.5
    assert report["latency_ms"]["p50"] is not None and report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 60 and {r["status"] for r in rows} == {"200", "503"}
    assert [float(r["intended_offset_s"]) for r in rows] == sorted(float(r["intended_offset_s"]) for r in rows)
    gated = subprocess.run([*LICHEN, "loadtest", "--url", server + "/status/503", "--rate", "50", "--duration",
                            "0.5s", "--max-error-ratio", "0.1"], capture_output=True, text=True, timeout=60)
    assert gated.returncode == 1 and "error ratio 1.0000 > 0.1" in gated.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "ftp://x/"], "--url: expected an http:// or https:// URL"),
    (["--url", "http://127.0.0.1:1/", "--route", "no-slash"], "--route: route 'no-slash'"),
    (["--url", "http://127.0.0.1:1/", "--header", "nocolon"], "--header: expected 'Name: value'"),
    (["--url", "http://127.0.0.1:1/", "--rate", "0"], "--rate: rate must be a positive number"),
    (["--url", "http://127.0.0.1:1/", "--profile", "wobble"], "--profile: expected one of constant"),
    (["--url", "http://127.0.0.1:1/", "--arrivals", "bursty"], "--arrivals: expected uniform or poisson"),
])
def test_bad_arguments_are_named_without_a_traceback(args: list[str], message: str) -> None:
    done = subprocess.run([*LICHEN, "loadtest", *args, "--duration", "1s"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_a_profile_file_error_names_its_line(tmp_path: Path) -> None:
    profile = tmp_path / "shape.txt"
    profile.write_text("0 10\n5 x\n")
    done = subprocess.run([*LICHEN, "loadtest", "--url", "http://127.0.0.1:1/", "--profile", str(profile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"{profile}:2: expected 'SECONDS RATE'" in done.stderr
