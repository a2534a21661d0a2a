"""`lichen carbon plan` through the real CLI: the plan, the actual and oracle figures, and its errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

LICHEN = str(Path(sys.executable).with_name("lichen"))
T0 = 1_717_200_000  # 2024-06-01T00:00Z


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _trace(path: Path, days: int = 20, bump_after_s: float | None = None) -> Path:
    rows = ["datetime,carbon_intensity_g_per_kwh"]
    for i in range(days * 24):
        t = T0 + i * 3600
        value = 300 + 100 * math.sin(2 * math.pi * (i - 6) / 24)  # lowest at 00:00, highest at 12:00
        if bump_after_s is not None and t > bump_after_s:
            value += 50 * math.sin(i)  # a different future
        rows.append(f"{datetime.fromtimestamp(t, UTC).strftime('%Y-%m-%dT%H:%M:%S')},{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_plan_from_history_waits_for_the_night_and_reports_actual_and_oracle(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace.csv")
    at = "2024-06-15T14:00:00"
    result = _lichen("carbon", "plan", "--trace", str(trace), "--at", at, "--duration", "2h", "--deadline", "14h",
                     "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["start"] == "2024-06-15T23:00:00Z"  # the 2 h window around midnight, the cycle's low
    assert report["chosen"]["actual_mean"] < report["at_once"]["actual_mean"]
    assert 0.4 < report["savings"]["actual"] < 0.7 and report["oracle"]["start"] == report["start"]
    # the future of the trace is not read when planning: a different future, the same start
    other = _trace(tmp_path / "other.csv", bump_after_s=datetime.fromisoformat(at + "+00:00").timestamp())
    again = json.loads(_lichen("carbon", "plan", "--trace", str(other), "--at", at, "--duration", "2h",
                               "--deadline", "14h", "--json", cwd=tmp_path).stdout)
    assert again["start"] == report["start"] and again["chosen"]["actual_mean"] != report["chosen"]["actual_mean"]


def test_a_forecast_file_is_planned_with_and_a_short_deadline_starts_at_once(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace.csv")
    with_forecast = json.loads(_lichen("carbon", "plan", "--trace", str(trace), "--forecast", str(trace), "--at",
                                       "2024-06-15T14:00:00", "--duration", "2h", "--deadline", "14h", "--json",
                                       cwd=tmp_path).stdout)
    oracle = with_forecast["oracle"]["savings"]  # hindsight on a 1-minute grid; the plan's grid is 5 minutes
    assert 0.98 * oracle <= with_forecast["savings"]["actual"] <= oracle + 1e-9
    short = _lichen("carbon", "plan", "--trace", str(trace), "--at", "2024-06-15T14:00:00", "--duration", "5h",
                    "--deadline", "3h", cwd=tmp_path)
    assert short.returncode == 0 and "warning: the deadline (3 h) is shorter" in short.stdout
    assert "start 2024-06-15T14:00:00Z (wait 0.00 h)" in short.stdout


def test_bad_arguments_are_one_located_error(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace.csv", days=2)
    for args, where in ((["--at", "soon"], "--at"), (["--duration", "-1h"], "--duration"),
                        (["--at", "2024-05-01T00:00"], "less than two rows before")):
        base = {"--trace": str(trace), "--duration": "2h", "--deadline": "6h"}
        for flag, value in zip(args[::2], args[1::2], strict=True):
            base[flag] = value
        result = _lichen("carbon", "plan", *[x for kv in base.items() for x in kv], cwd=tmp_path)
        assert result.returncode == 2 and where in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_non_finite_times_and_thresholds_and_a_gap_in_the_span_are_refused(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace.csv", days=10)
    base = ["carbon", "plan", "--trace", str(trace), "--duration", "2h", "--deadline", "6h"]
    for extra, where in ((["--at", "nan"], "--at"), (["--at", "1e20"], "--at"),
                         (["--at", "2024-06-08T00:00", "--max-intensity", "nan"], "--max-intensity")):
        result = _lichen(*base, *extra, cwd=tmp_path)
        assert result.returncode == 2 and where in result.stderr and "Traceback" not in result.stderr, result.stderr
    lines = trace.read_text().splitlines()
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("\n".join(lines[:150] + lines[160:]) + "\n")  # 10 hours missing after line 150
    result = _lichen("carbon", "plan", "--trace", str(gappy), "--duration", "2h", "--deadline", "6h", "--at",
                     "2024-06-08T00:00", cwd=tmp_path)
    assert result.returncode == 2 and "gappy.csv" in result.stderr and "between lines 150 and 151" in result.stderr

