"""The ceiling of `lichen loadtest` on this machine, beside wrk's, against the same nginx in one run.

nginx (one worker, so the other core is the generator's) answers a fixed
200 from memory: the target is never the limit. Then:

* wrk, closed loop with 64 connections for ``--duration`` seconds: its
  throughput and its CPU per request (from the child's rusage);
* `lichen loadtest --json`, open loop at rising rates: a rate counts as
  sustained when every request was answered, the answered rate is within 3 %
  of the target and the generator's own send lag stays under 10 ms at p99.
  The highest sustained rate is the ceiling; its CPU per request is the
  generator's cost.

It prints each step, then both sides and their ratio. wrk is a C program with
a closed loop, so it measures the most a connection pool can push, not a
schedule it keeps; the ratio says how much of that the Python generator
keeps while holding a schedule.

    .venv/bin/python bench/loadtest.py [--duration 3] [--rates 1000,2000,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import ensure_nginx, free_port, wait_http, _parse_wrk  # noqa: E402

PY = sys.executable
LICHEN = [PY, "-c", "from lichen.cli.main import run; run()"]
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""


def run_wrk(url: str, duration_s: float, connections: int) -> dict[str, float]:
    process = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
                                url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = process.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    parsed = _parse_wrk(out)
    cpu_s = usage.ru_utime + usage.ru_stime
    return {**parsed, "cpu_s": cpu_s, "cpu_us_per_request": cpu_s * 1e6 / max(1, parsed["requests"])}


def run_lichen(url: str, rate: float, duration_s: float) -> dict:
    done = subprocess.run([*LICHEN, "loadtest", "--url", url, "--rate", str(rate), "--duration", f"{duration_s}s",
                           "--json", "--connections", "256"], capture_output=True, text=True, timeout=duration_s + 120)
    if done.returncode != 0:
        raise SystemExit(f"lichen loadtest failed at {rate} req/s: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def sustained(report: dict, rate: float) -> bool:
    lag = report["generator"]["lag_p99_ms"] or 0.0
    return (report["answered"] == report["scheduled"] and not report["failures"]
            and report["throughput_rps"] >= 0.97 * rate and lag <= 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rates", default="1000,2000,4000,8000,12000,16000,20000,25000,30000,40000,50000,60000,70000,80000")
    args = parser.parse_args()
    nginx = ensure_nginx()
    if nginx is None or shutil.which("wrk") is None:
        raise SystemExit("needs nginx and wrk (apt-get install nginx wrk)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as scratch:
        conf = Path(scratch) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=scratch, port=port))
        server = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        try:
            wait_http(port, "/")
            wrk = run_wrk(url, args.duration, 64)
            print(f"wrk (closed loop, 64 connections, 1 thread): {wrk['rps']:.0f} req/s, "
                  f"{wrk['cpu_us_per_request']:.1f} µs CPU per request, p99 {wrk['p99_ms']:.2f} ms", flush=True)
            print(f"{'target req/s':>12} {'answered req/s':>15} {'p99 ms':>8} {'lag p99 ms':>11} "
                  f"{'CPU µs/req':>10}  sustained", flush=True)
            ceiling, ceiling_cpu = 0.0, None
            for rate in (float(r) for r in args.rates.split(",")):
                report = run_lichen(url, rate, args.duration)
                ok = sustained(report, rate)
                generator = report["generator"]
                print(f"{rate:>12.0f} {report['throughput_rps']:>15.0f} {report['latency_ms']['p99']:>8.2f} "
                      f"{generator['lag_p99_ms']:>11.2f} {generator['cpu_us_per_request']:>10.1f}  "
                      f"{'yes' if ok else 'no'}", flush=True)
                if not ok:
                    break
                ceiling, ceiling_cpu = rate, generator["cpu_us_per_request"]
        finally:
            server.terminate()
            server.wait(10)
    print(f"\nlichen loadtest ceiling (open loop, schedule held): {ceiling:.0f} req/s at {ceiling_cpu} µs CPU per request")
    print(f"wrk (closed loop, saturation):                      {wrk['rps']:.0f} req/s at "
          f"{wrk['cpu_us_per_request']:.1f} µs CPU per request")
    print(f"ratio lichen / wrk: {ceiling / wrk['rps']:.2f} of the throughput, "
          f"{(ceiling_cpu or 0) / wrk['cpu_us_per_request']:.1f}x the CPU per request")


if __name__ == "__main__":
    main()
