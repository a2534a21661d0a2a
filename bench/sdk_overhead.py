"""What the SDK adds: per request in-process, and over a socket against bare uvicorn (start and throughput).

Three measurements, each side by side in one run (alternating rounds, so load from other
processes hits both sides alike), each printing both sides and their ratio:

1. in-process: a plain FastAPI route and the same handler as a Lichen Service, driven
   through ASGI (no sockets) with the same JSON body; CPU time per request, best of the
   rounds. The difference is Lichen's wrapper: request id, per-endpoint gate, metrics and
   one JSON log line (written to /dev/null through the handler ``lichen serve`` uses).
2. startup: seconds from spawning the process to the first 200 of ``GET /ping`` of a
   trivial service, ``lichen serve`` (started as the controller starts a replica) against
   bare ``uvicorn`` serving the same route with Starlette and with FastAPI; median of the rounds.
3. throughput: requests per second of that trivial ``GET /ping`` under ``wrk`` (one thread,
   32 connections; an asyncio keep-alive generator when wrk is missing) for ``lichen serve``
   with its default logging (one JSON line per request, to a file) against bare uvicorn with
   its access log off; median of the rounds. Issue 12's target is >= 0.8x uvicorn + FastAPI
   (Lichen services are FastAPI apps), and <= 0.5 s to the first 200.

    .venv/bin/python bench/sdk_overhead.py [--part all|inprocess|startup|throughput]
        [--requests 4000] [--rounds 5] [--startup-rounds 7] [--throughput-rounds 3] [--duration-s 3]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.sdk.building import build_service_app
from lichen.sdk.logs import configure_logging


class Query(BaseModel):
    user_id: int
    k: int = 10


class Answer(BaseModel):
    items: list[int]


def plain_app() -> Any:
    app = FastAPI()

    @app.post("/recommend")
    async def recommend(query: Query) -> Answer:
        return Answer(items=list(range(query.k)))

    return app


class Recommender(Service):
    @endpoint("/recommend", method="POST", timeout_s=2, max_concurrency=64)
    async def recommend(self, query: Query) -> Answer:
        return Answer(items=list(range(query.k)))


BODY = json.dumps({"user_id": 7, "k": 10}).encode()
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/recommend",
    "raw_path": b"/recommend",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"replica"), (b"content-type", b"application/json"), (b"content-length", b"22")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


async def drive(app: Any, requests: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(200):  # warm up caches and lazily created metric children
        await app(dict(SCOPE), receive, send)
    started = time.process_time()  # CPU time of this process: steadier than wall time on a shared machine
    for _ in range(requests):
        await app(dict(SCOPE), receive, send)
    elapsed = time.process_time() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / requests


TRIVIAL_SERVICE = """
from lichen import Service, endpoint


class Trivial(Service):
    @endpoint("/ping", method="GET")
    async def ping(self) -> dict:
        return {"ok": True}
"""
TRIVIAL_STARLETTE = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def ping(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/ping", ping)])
"""
TRIVIAL_FASTAPI = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict:
    return {"ok": True}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _servers(app_dir: Path) -> dict[str, Any]:
    """name -> a function of the port giving the command that serves GET /ping on it."""
    (app_dir / "trivial_service.py").write_text(TRIVIAL_SERVICE)
    (app_dir / "trivial_starlette.py").write_text(TRIVIAL_STARLETTE)
    (app_dir / "trivial_fastapi.py").write_text(TRIVIAL_FASTAPI)
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    return {
        # exactly how the controller starts a replica (lichen.runtime.launching), default log level
        "lichen serve": lambda port: [sys.executable, "-c", "from lichen.cli.main import run; run()", "serve",
                                      "trivial_service:Trivial", "--port", str(port)],
        "uvicorn + Starlette": lambda port: [*uvicorn, "trivial_starlette:app", "--port", str(port)],
        "uvicorn + FastAPI": lambda port: [*uvicorn, "trivial_fastapi:app", "--port", str(port)],
    }


def _get_ping(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _start(command: list[str], app_dir: Path, log: Path, port: int,
           timeout_s: float = 20.0) -> tuple[subprocess.Popen[bytes], float]:
    """Spawn ``command`` and poll GET /ping every 2 ms: the process and the seconds to its first 200."""
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=app_dir, stdout=out, stderr=out)
    while time.perf_counter() - started < timeout_s:
        try:
            if _get_ping(port) == 200:
                return process, time.perf_counter() - started
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.002)
    process.kill()
    raise SystemExit(f"{command} gave no 200 within {timeout_s} s; see {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure_startup(servers: dict[str, Any], app_dir: Path, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, command in servers.items():
            port = _free_port()
            process, seconds = _start(command(port), app_dir, app_dir / "startup.log", port)
            _stop(process)
            times[name].append(seconds)
    return times


async def _generate(port: int, duration_s: float, connections: int) -> float:
    """A closed-loop keep-alive load without wrk: requests per second over ``duration_s``."""
    request = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    done = 0
    deadline = time.perf_counter() + duration_s

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return done / (time.perf_counter() - started)


def _load(port: int, duration_s: float, connections: int) -> tuple[float, str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return asyncio.run(_generate(port, duration_s, connections)), "asyncio generator"
    out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", f"http://127.0.0.1:{port}/ping"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1)), "wrk"  # type: ignore[union-attr]


def measure_throughput(servers: dict[str, Any], app_dir: Path, rounds: int, duration_s: float,
                       connections: int = 32) -> tuple[dict[str, list[float]], str]:
    rates: dict[str, list[float]] = {name: [] for name in servers}
    tool = ""
    for _ in range(rounds):
        for name, command in servers.items():
            port = _free_port()
            process, _ = _start(command(port), app_dir, app_dir / f"{name.split()[-1]}.log", port)
            try:
                _load(port, 1, connections)  # warm up: connections, lazily made metric children
                rate, tool = _load(port, duration_s, connections)
            finally:
                _stop(process)
            rates[name].append(rate)
    return rates, tool


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def in_process(requests: int, rounds: int) -> None:
    plain, lichen = plain_app(), build_service_app(Recommender)
    plain_runs: list[float] = []
    lichen_runs: list[float] = []
    with open(os.devnull, "w") as devnull:
        configure_logging("info", stream=devnull, batched=True)  # as lichen serve logs
        for _ in range(rounds):  # alternate so load from other processes hits both sides alike
            plain_runs.append(asyncio.run(drive(plain, requests)))
            lichen_runs.append(asyncio.run(drive(lichen, requests)))
        logging.shutdown()
    plain_s, lichen_s = min(plain_runs), min(lichen_runs)
    print(f"in-process, CPU per request ({machine()}):")
    print(f"  plain FastAPI route : {plain_s * 1e6:8.1f} us/request")
    print(f"  lichen Service      : {lichen_s * 1e6:8.1f} us/request")
    print(f"  ratio lichen/plain  : {lichen_s / plain_s:8.2f}x  (+{(lichen_s - plain_s) * 1e6:.1f} us/request)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "inprocess", "startup", "throughput"], default="all")
    parser.add_argument("--requests", type=int, default=4000, help="in-process requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds; the best of each side counts")
    parser.add_argument("--startup-rounds", type=int, default=7, help="spawns per server; the median counts")
    parser.add_argument("--throughput-rounds", type=int, default=3, help="load runs per server; the median counts")
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds of load per throughput run")
    args = parser.parse_args()
    if args.part in ("all", "inprocess"):
        in_process(args.requests, args.rounds)
    if args.part == "inprocess":
        return
    with tempfile.TemporaryDirectory(prefix="lichen-bench-") as tmp:
        app_dir = Path(tmp)
        servers = _servers(app_dir)
        if args.part in ("all", "startup"):
            times = measure_startup(servers, app_dir, args.startup_rounds)
            print(f"startup, spawn to the first 200 of GET /ping, median of {args.startup_rounds} ({machine()}):")
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, values in times.items():
                print(f"  {name:20}: {medians[name]:6.3f} s   (rounds: {' '.join(f'{v:.3f}' for v in values)})")
            for base in ("uvicorn + Starlette", "uvicorn + FastAPI"):
                print(f"  ratio lichen / {base:20}: {medians['lichen serve'] / medians[base]:5.2f}x")
            print(f"  target: lichen serve <= 0.5 s: {'met' if medians['lichen serve'] <= 0.5 else 'MISSED'}")
        if args.part in ("all", "throughput"):
            rates, tool = measure_throughput(servers, app_dir, args.throughput_rounds, args.duration_s)
            print(f"throughput, GET /ping, {tool}, 32 connections, {args.duration_s:g} s, median of "
                  f"{args.throughput_rounds} ({machine()}):")
            medians = {name: statistics.median(values) for name, values in rates.items()}
            for name, values in rates.items():
                print(f"  {name:20}: {medians[name]:8.0f} req/s   (rounds: {' '.join(f'{v:.0f}' for v in values)})")
            for base in ("uvicorn + FastAPI", "uvicorn + Starlette"):
                print(f"  ratio lichen / {base:20}: {medians['lichen serve'] / medians[base]:5.2f}x")
            ratio = medians["lichen serve"] / medians["uvicorn + FastAPI"]
            print(f"  target: >= 0.8x uvicorn + FastAPI: {'met' if ratio >= 0.8 else 'MISSED'}")


if __name__ == "__main__":
    main()
