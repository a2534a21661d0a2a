"""Recommender serving bench: recommend latency and throughput, cached and
uncached, in-process and through ``lichen serve``, plus training time and
metrics (from bench/recsys_training.py).

    .venv/bin/python bench/recsys.py                   # everything
    .venv/bin/python bench/recsys.py --no-training     # serving only (fast)
    .venv/bin/python bench/recsys.py --no-training --catalogue ml20m   # 27,278 items (synthetic, ML-20M's shape)
    .venv/bin/python bench/recsys.py --no-training --model kernel      # the NTK kernel ridge, ML-100K's best

It builds its own app directory: EASE (or, with ``--model kernel``, the NTK kernel ridge that ``train``
promotes on ML-100K) fitted on MovieLens 100K (from ``../shared/data/ml-100k``; a synthetic set of the same
shape otherwise), registered and promoted in a fresh model registry. Then, at a fixed
concurrency (``--concurrency``, default 8):

* in-process: the ``Recommender`` service object after ``setup()``, its
  handler called from that many threads (no HTTP);
* through ``lichen serve``: one replica, that many concurrent HTTP clients.

"uncached" runs with the result cache off (``CACHE_SIZE=0``) so every
request scores the model; "cached" warms the LRU with the requested users
first. The four measurements are interleaved in rounds so they share the
machine's load; they are printed with their ratios. The target is p99 under
10 ms in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_CODE = ROOT / "examples" / "recsys"
sys.path.insert(0, str(APP_CODE))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lichen import ModelRegistry  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
TARGET_P99_MS = 10.0
MODEL = "recommender"


ML20M = (138_493, 27_278, 20_000_263)  # users, items, ratings
TUNED = {"ease": {"l2": 300.0}, "kernel": {"l2": 4.0, "power": 2.0}}  # train's choices on ML-100K


def build_app(app: Path, catalogue: str = "ml100k", kind: str = "ease") -> tuple[str, list[int]]:
    """EASE (or ``kind``) on ML-100K (or synthetic), or EASE on a synthetic set of ML-20M's shape, registered and
    promoted under ``app``; returns (source, users)."""
    from recsys.interactions import IdMap, Interactions, interaction_matrix
    from recsys.models import EASE, make_model
    from recsys.synthesizing import synthesize, synthesize_at_scale

    if catalogue == "ml20m":
        from threadpoolctl import threadpool_limits

        data = synthesize_at_scale(*ML20M, seed=0)
        users, items = IdMap.of(data.users), IdMap.of(data.items)
        started = time.perf_counter()
        with threadpool_limits(len(os.sched_getaffinity(0)), "blas"):
            model = EASE(l2=300.0).fit(interaction_matrix(data, users, items), users, items)
        fit_s = time.perf_counter() - started
        candidates_s, heavy = precompute(model)
        model.save(app / "ease")
        del model
        registry = ModelRegistry(app / ".lichen" / "models")
        mv = registry.register(MODEL, app / "ease", params={"model": "ease", "l2": 300.0})
        registry.promote(MODEL, mv.version)
        sample = np.random.default_rng(0).choice(users.ids, 20_000, replace=False)
        return (f"SYNTHETIC of ML-20M's shape ({data.n_users:,} users, {data.n_items:,} items, {len(data):,} "
                f"ratings; EASE fitted in {fit_s:.0f} s, candidates for {heavy:,} users in {candidates_s:.0f} s)",
                sample.tolist())
    if ML100K.is_file():
        raw = np.loadtxt(ML100K, dtype=np.int64)
        data = Interactions.from_arrays(raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3])
        source = "MovieLens 100K"
    else:
        data = synthesize(943, 1682, seed=0)
        source = "SYNTHETIC (ML-100K not found)"
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    params = TUNED[kind]
    model = make_model(kind, **params).fit(interaction_matrix(data, users, items), users, items)
    candidates_s, heavy = precompute(model)
    model.save(app / kind)
    registry = ModelRegistry(app / ".lichen" / "models")
    mv = registry.register(MODEL, app / kind, params={"model": kind, **params})
    registry.promote(MODEL, mv.version)
    return (f"{source}, {kind} {params} (candidates for {heavy:,} users in {candidates_s:.1f} s)",
            users.ids.tolist())


def precompute(model) -> tuple[float, int]:
    """What ``train`` does after the final fit: candidates for the heaviest users (recsys.models.candidates)."""
    started = time.perf_counter()
    heavy = model.precompute_candidates()
    return time.perf_counter() - started, heavy


def summarize(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))],
        "rps": len(ms) / wall_s,
    }


# ------------------------------------------------------------- in-process


def make_service(app: Path, cached: bool):
    os.environ["LICHEN_APP_DIR"] = str(app)
    os.environ["CACHE_SIZE"] = "100000" if cached else "0"
    os.environ["MODEL_POLL_S"] = "3600"
    from recsys.services import Recommender

    service = Recommender()  # reads CACHE_SIZE now
    service.setup()
    return service


def in_process_chunk(service, chosen: list[int], concurrency: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    lock = threading.Lock()

    def work(part: list[int]) -> None:
        local = []
        for user in part:
            start = time.perf_counter()
            service.for_user(user, k=10)
            local.append(time.perf_counter() - start)
        with lock:
            latencies.extend(local)

    parts = [chosen[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, parts))
    return latencies, time.perf_counter() - started, 0


# ------------------------------------------------------- through lichen serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_replica(app: Path, cached: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LICHEN_APP_DIR": str(app), "CACHE_SIZE": "100000" if cached else "0",
           "MODEL_POLL_S": "3600"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lichen.cli.main import run; run()", "serve", "recsys.services:Recommender",
         "--port", str(port), "--app-dir", str(APP_CODE), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lichen serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("lichen serve never became ready")


async def _http_load(
    url: str, chosen: list[int], concurrency: int, floor: bool = False
) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for user in chosen:
        queue.put_nowait(user)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                user = queue.get_nowait()
                start = time.perf_counter()
                if floor:  # the serving floor: SDK + uvicorn + client, no handler work
                    response = await client.get("/healthz")
                else:
                    response = await client.get(f"/v1/recommendations/{user}", params={"k": 10})
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started, errors


def measure_all(app: Path, users: list[int], requests: int, concurrency: int, rounds: int):
    """Every (path, cache) pair, interleaved in ``rounds`` so all four see the same machine load."""
    chosen = [users[i % len(users)] for i in range(requests)]
    services = {"uncached": make_service(app, False), "cached": make_service(app, True)}
    served = services["uncached"].holder.current.model
    if served.candidates is not None or len(getattr(served, "known_scores", ())):
        # the same model without its candidates or its kept scores (sharing the weights): every request
        # scores the history, as one with new events does
        scored = make_service(app, False)
        scored.holder.current = dataclasses.replace(scored.holder.current,
                                                    model=copy.copy(scored.holder.current.model))
        scored.holder.current.model.candidates = None
        if hasattr(scored.holder.current.model, "known_scores"):
            scored.holder.current.model.known_scores = np.zeros((0, 0), np.float32)
        services["uncached, scored"] = scored
    replicas = {"uncached": start_replica(app, False), "cached": start_replica(app, True)}
    totals: dict[tuple[str, str], list] = {}
    try:
        for proc, url in replicas.values():
            wait_ready(proc, url)
        # Warm-up: every user once (fills the caches), and the HTTP connections.
        for label in ("uncached", "cached"):
            for user in set(chosen):
                services[label].for_user(user, k=10)
            asyncio.run(_http_load(replicas[label][1], list(dict.fromkeys(chosen)), concurrency))
        chunk = max(1, len(chosen) // rounds)
        for r in range(rounds):
            part = chosen[r * chunk:(r + 1) * chunk]
            for label in ("uncached", "cached"):
                runs = {
                    ("in-process", label): lambda: in_process_chunk(services[label], part, concurrency),
                    ("lichen serve", label): lambda: asyncio.run(_http_load(replicas[label][1], part, concurrency)),
                }
                if label == "uncached" and "uncached, scored" in services:
                    runs[("in-process", "uncached, scored")] = lambda: in_process_chunk(
                        services["uncached, scored"], part, concurrency)
                if label == "uncached":
                    url = replicas[label][1]
                    runs[("lichen serve", "GET /healthz")] = lambda: asyncio.run(
                        _http_load(url, part, concurrency, floor=True)
                    )
                for key, run in runs.items():
                    lat, wall, errors = run()
                    total = totals.setdefault(key, [[], 0.0, 0])
                    total[0].extend(lat)
                    total[1] += wall
                    total[2] += errors
    finally:
        for service in services.values():
            service.teardown()
        for proc, _url in replicas.values():
            proc.terminate()
        for proc, _url in replicas.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = {}
    for key, (lat, wall, errors) in totals.items():
        out[key] = {**summarize(lat, wall), "errors": errors}
    return out


def sequential_reference(app: Path, users: list[int], requests: int) -> dict[str, float]:
    """In-process, uncached, one caller: the service's own cost without GIL queueing."""
    service = make_service(app, False)
    try:
        chosen = [users[i % len(users)] for i in range(requests)]
        lat, wall, _ = in_process_chunk(service, chosen, 1)
        return summarize(lat, wall)
    finally:
        service.teardown()


# ----------------------------------------------------------------- report


def render_serving(console: Console, rows: dict[tuple[str, str], dict[str, float]], concurrency: int,
                   source: str) -> None:
    table = Table(title=f"recommend latency, k=10, concurrency {concurrency} — EASE on {source}")
    for column in ("path", "cache", "requests", "p50 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="right" if column not in ("path", "cache") else "left")
    for (path, cache), r in rows.items():
        table.add_row(path, cache, f"{r['n']:,}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['rps']:,.0f}")
    console.print(table)
    ratios = Table(title="ratios (same run)")
    for column in ("comparison", "p50", "p99", "throughput"):
        ratios.add_column(column)
    for cache in ("uncached", "cached"):
        a, b = rows[("lichen serve", cache)], rows[("in-process", cache)]
        ratios.add_row(f"lichen serve / in-process, {cache}", f"{a['p50_ms'] / b['p50_ms']:.1f}×",
                       f"{a['p99_ms'] / b['p99_ms']:.1f}×", f"{a['rps'] / b['rps']:.2f}×")
    if ("in-process", "uncached, scored") in rows:  # a model with candidates or kept scores
        a, b = rows[("in-process", "uncached, scored")], rows[("in-process", "uncached")]
        ratios.add_row("every history scored / candidates or kept scores, in-process uncached",
                       f"{a['p50_ms'] / b['p50_ms']:.1f}×", f"{a['p99_ms'] / b['p99_ms']:.1f}×",
                       f"{a['rps'] / b['rps']:.2f}×")
    for path in ("in-process", "lichen serve"):
        a, b = rows[(path, "uncached")], rows[(path, "cached")]
        ratios.add_row(f"uncached / cached, {path}", f"{a['p50_ms'] / b['p50_ms']:.1f}×",
                       f"{a['p99_ms'] / b['p99_ms']:.1f}×", f"{a['rps'] / b['rps']:.2f}×")
    console.print(ratios)
    p99 = rows[("in-process", "uncached")]["p99_ms"]
    verdict = "meets" if p99 < TARGET_P99_MS else "MISSES"
    console.print(f"in-process uncached p99 {p99:.3f} ms vs target {TARGET_P99_MS:.0f} ms: "
                  f"{p99 / TARGET_P99_MS:.2f}× the target, {verdict} it")
    floor = rows.get(("lichen serve", "GET /healthz"))
    if floor:
        a = rows[("lichen serve", "uncached")]
        console.print(f"serving floor (GET /healthz on the same replica, same load): p50 {floor['p50_ms']:.3f} ms, "
                      f"p99 {floor['p99_ms']:.3f} ms, {floor['rps']:,.0f} req/s; uncached recommend / floor: "
                      f"p50 {a['p50_ms'] / floor['p50_ms']:.2f}×, throughput {a['rps'] / floor['rps']:.2f}×")
    errors = sum(int(r.get("errors", 0)) for r in rows.values())
    console.print(f"HTTP errors during the load: {errors}")
    load1, load5, _ = os.getloadavg()
    console.print(f"machine: {os.cpu_count()} CPUs, load average {load1:.1f} (1 min) / {load5:.1f} (5 min) "
                  "during the run; client and server share these CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recommender serving bench (and training, via recsys_training).")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the requests are split into")
    parser.add_argument("--no-training", action="store_true", help="skip training time and metrics")
    parser.add_argument("--catalogue", choices=("ml100k", "ml20m"), default="ml100k",
                        help="EASE on ML-100K (1,682 items), or on a synthetic set of ML-20M's shape (27,278 items; "
                             "about 12 GiB of memory: the model is loaded four times)")
    parser.add_argument("--model", choices=sorted(TUNED), default="ease",
                        help="the model served on ML-100K (the ml20m catalogue serves EASE)")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=140)

    if not args.no_training:
        sys.path.insert(0, str(ROOT / "bench"))
        import recsys_training

        console.print("[bold]training time and metrics[/] (bench/recsys_training.py)")
        recsys_training.render(recsys_training.measure(), console)

    with tempfile.TemporaryDirectory(prefix="lichen-bench-recsys-") as tmp:
        app = Path(tmp)
        source, users = build_app(app, args.catalogue, args.model)
        rows = measure_all(app, users, args.requests, args.concurrency, args.rounds)
        render_serving(console, dict(sorted(rows.items())), args.concurrency, source)
        seq = sequential_reference(app, users, args.requests // 2)
        console.print(f"reference, in-process uncached at concurrency 1: p50 {seq['p50_ms']:.3f} ms, "
                      f"p99 {seq['p99_ms']:.3f} ms, {seq['rps']:,.0f} req/s (p99 ratio concurrency "
                      f"{args.concurrency} / 1: {rows[('in-process', 'uncached')]['p99_ms'] / seq['p99_ms']:.1f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
