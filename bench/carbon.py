"""Carbon-aware starts (issue 16): what Lichen's planner saves on real grid traces, beside starting at once and the oracle.

What it measures. For each trace (a CSV of carbon intensity over time, read with Lichen's own reader), a job
is submitted every hour of the trace after a 28-day warm-up (the history the forecaster may use), for every
shape of length 1, 2, 3 and 4 h and deadline (it must finish by) 8, 12 and 24 h. Each submission is planned by
:func:`lichen.control.carbon_planning.plan` (5-minute grid) with four forecasts:

* **perfect**: the trace itself (a perfect forecast file);
* **history** (Lichen): :func:`~lichen.control.carbon_planning.forecast_from_history` on the trace before the
  submission only;
* **yesterday**: the value 24 h earlier ("same time yesterday", the simple baseline);
* and the start at once (no shifting).

The actual mean intensity of each chosen window is read from the trace (linear between rows), and each
policy's saving is ``(at once − chosen) / at once``. The **oracle** is the best window in hindsight on a
1-minute grid (the planner's own grid is 5 minutes, so "perfect" can fall just short of it). Reported per trace and shape, and averaged over traces and shapes: each policy's mean saving
and its share of the oracle's (mean saving / oracle's mean saving). Targets (issue 16): perfect ≥ 0.98 of the
oracle, history ≥ 0.70.

Traces are not in the repository (licences). By default it reads every ``*.csv`` in ``$LICHEN_TRACES`` (else
``/tmp/traces``); without any it says where to get some and exits 0.

Usage: .venv/bin/python bench/carbon.py [--trace NAME=PATH ...] [--every-h 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from lichen.control.carbon_planning import DAY_S, HOUR_S, forecast_from_history, plan
from lichen.green.intensity_traces import read_trace

DURATIONS_H = (1, 2, 3, 4)
DEADLINES_H = (8, 12, 24)
WARMUP_S = 28 * DAY_S
POLICIES = ("perfect", "history", "yesterday")


def window_mean(times: np.ndarray, values: np.ndarray, start_s: float, duration_s: float) -> float:
    offsets = np.linspace(0.0, duration_s, max(2, int(duration_s // 300) + 1))
    points = np.interp(start_s + offsets, times, values)
    return float((points[1:] + points[:-1]).mean() / 2)


def evaluate(name: str, times: np.ndarray, values: np.ndarray, every_s: float) -> list[dict]:
    horizon_s = max(DEADLINES_H) * HOUR_S
    submissions = np.arange(times[0] + WARMUP_S, times[-1] - horizon_s, every_s)
    results: dict[tuple[int, int], dict[str, list[float]]] = {
        (d, dl): {p: [] for p in (*POLICIES, "oracle")} for d in DURATIONS_H for dl in DEADLINES_H}
    for now_s in submissions:
        past = (times >= now_s - 29 * DAY_S) & (times <= now_s)
        history = forecast_from_history(times[past], values[past], float(now_s), horizon_s)
        ahead = (times >= now_s - DAY_S) & (times <= now_s + horizon_s + HOUR_S)
        yesterday = (times[ahead] + DAY_S, values[ahead])
        forecasts = {"perfect": (times, values), "history": history, "yesterday": yesterday}
        for duration_h in DURATIONS_H:
            duration_s = duration_h * HOUR_S
            at_once = window_mean(times, values, float(now_s), duration_s)
            for deadline_h in DEADLINES_H:
                entry = results[(duration_h, deadline_h)]
                for policy, (f_times, f_values) in forecasts.items():
                    chosen = plan(f_times, f_values, float(now_s), duration_s, deadline_h * HOUR_S)
                    saving = (at_once - window_mean(times, values, chosen.start_s, duration_s)) / at_once
                    entry[policy].append(saving)
                best = plan(times, values, float(now_s), duration_s, deadline_h * HOUR_S, grid_s=60.0)
                entry["oracle"].append((at_once - window_mean(times, values, best.start_s, duration_s)) / at_once)
    rows = []
    for (duration_h, deadline_h), entry in results.items():
        oracle = float(np.mean(entry["oracle"]))
        row = {"trace": name, "duration_h": duration_h, "deadline_h": deadline_h, "submissions": len(entry["oracle"]),
               "oracle_saving": oracle}
        for policy in POLICIES:
            mean = float(np.mean(entry[policy]))
            row[f"{policy}_saving"] = mean
            row[f"{policy}_of_oracle"] = mean / oracle if oracle > 0 else float("nan")
        rows.append(row)
    return rows


def traces(args: argparse.Namespace) -> list[tuple[str, Path]]:
    if args.trace:
        return [(item.split("=", 1)[0], Path(item.split("=", 1)[1])) for item in args.trace]
    folder = Path(os.environ.get("LICHEN_TRACES", "/tmp/traces"))
    return [(p.stem, p) for p in sorted(folder.glob("*.csv"))] if folder.is_dir() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", action="append", help="NAME=PATH of a carbon-intensity CSV (repeatable)")
    parser.add_argument("--every-h", type=float, default=1.0, help="submit a job every this many hours")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    found = traces(args)
    if not found:
        print("carbon: skipped, no trace to plan on. Put carbon-intensity CSVs (a year, hourly or finer) in "
              "$LICHEN_TRACES or /tmp/traces, or pass --trace NAME=PATH; docs/sustainability.md names sources.")
        return 0
    rows: list[dict] = []
    for name, path in found:
        trace = read_trace(path)
        times, values = np.asarray(trace.times_s), np.asarray(trace.values)
        started = time.perf_counter()
        rows.extend(evaluate(name, times, values, args.every_h * HOUR_S))
        span_d = (times[-1] - times[0]) / DAY_S
        print(f"{name}: {len(times)} rows over {span_d:.0f} days, mean {values.mean():.0f} g/kWh; "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(f"{'trace':10} {'job':>4} {'deadline':>8} {'n':>5} {'oracle':>7} {'perfect':>14} {'history':>14} "
          f"{'yesterday':>14}")
    for r in rows:
        print(f"{r['trace']:10} {r['duration_h']:>3}h {r['deadline_h']:>7}h {r['submissions']:>5} "
              f"{r['oracle_saving']:>7.1%} " + " ".join(
                  f"{r[f'{p}_saving']:>6.1%} ({r[f'{p}_of_oracle']:.2f})" for p in POLICIES))
    print("mean share of the oracle's savings over traces and shapes: " + ", ".join(
        f"{p} {np.nanmean([r[f'{p}_of_oracle'] for r in rows]):.3f}" for p in POLICIES)
          + "  (targets: perfect >= 0.98, history >= 0.70)")
    for name in sorted({r["trace"] for r in rows}):
        mine = [r for r in rows if r["trace"] == name]
        print(f"  {name}: " + ", ".join(f"{p} {np.nanmean([r[f'{p}_of_oracle'] for r in mine]):.3f}"
                                        for p in POLICIES))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
