"""The same backend behind three front ends: (a) direct, (b) nginx as a reverse proxy, (c) the Lichen gateway.

The backend is two single-process uvicorn replicas of a tiny ASGI app (as
``lichen up`` would run two replicas); nginx and Lichen spread requests over
both, and "direct" runs one load generator per replica and adds them up.

Two workloads: a trivial handler (pure proxy cost) and one that burns about
2 ms of CPU per request (inference-like). For each front end it prints
throughput, p50 and p99 at saturation, then p50 at the same offered load of
about half of the slowest front end's saturation, and the ratios against the
targets (Lichen >= 0.5x nginx trivial, >= 0.9x nginx 2 ms, <= 1 ms added p50
at half load). Everything runs on this machine in one run; nginx is installed
with apt-get when missing. The load generator is wrk if present, else a
built-in asyncio one (much slower: it competes for the same CPUs).

    .venv/bin/python bench/gateway.py [--duration 5] [--connections 64] [--profile] [--tls]

``--tls`` measures TLS termination instead: nginx and the Lichen gateway serve
HTTPS with the same certificate (ECDSA P-256, made here with
``lichen.gateway.certificates``), the same protocols (TLS 1.2 and 1.3) and the
same TLS 1.2 cipher list (Mozilla "intermediate", the gateway's), both with
server preference; the bench prints the protocol and cipher each one
negotiates with the same client, then the trivial workload over keep-alive
HTTPS connections, both sides and their ratio (target >= 0.5x nginx).

``--tracing`` measures what tracing costs, on the trivial workload (pure proxy cost, where it weighs most):
the same gateway with ``observability.tracing`` absent (off), on at ``sampling_ratio: 0`` (trace context
passed on, nothing recorded) and on at 1 (every request a span, exported as OTLP/HTTP protobuf to a local
receiver that counts the posts without decoding them, as a collector elsewhere would cost this machine nothing). ``--baseline REV`` adds the gateway of an earlier commit (a git worktree), so
"off costs nothing" is measured against code without tracing, in the same run. Targets: off within noise of
the baseline; 100 % sampling >= 0.8x off. The spans each gateway exported and dropped are read from its own
``lichen_gateway_spans_total``.

``--profile`` then samples the gateway with py-spy (``pip install py-spy``)
under the trivial load and prints its hottest lines: a line that calls
``transport.write`` is time spent in the ``send()`` system call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKEND = ROOT / "tests" / "integration" / "gateway" / "apps" / "backend.py"
PY = sys.executable
LICHEN = str(Path(PY).with_name("lichen"))
WORKLOADS = {"trivial": "/hello", "cpu_2ms": "/cpu?ms=2"}

NGINX_CONF = """
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backend {{ {servers} keepalive 128; }}
  server {{
    listen 127.0.0.1:{port}{ssl_flag};
    {ssl_lines}
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_tls() -> ssl.SSLContext:
    """The bench's client side: it measures the servers, so it does not verify the (self-made) certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_http(port: int, path: str = "/hello", timeout_s: float = 30.0, tls: bool = False) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                s = client_tls().wrap_socket(raw, server_hostname="localhost") if tls else raw
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port} within {timeout_s} s")


def ensure_nginx() -> str | None:
    found = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("nginx missing: installing it with apt-get ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"], check=False)
    return shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None


# ------------------------------------------------------------------ load generators


def run_wrk(urls: list[str], duration_s: float, connections: int, rate: float | None) -> dict[str, float]:
    """wrk, closed loop at saturation; with ``rate`` a Lua delay paces each connection to about that total rate.

    Several URLs (the direct case: one per replica) run as concurrent wrk
    processes sharing the connections and the rate; their throughputs add up.
    """
    share = max(1, connections // len(urls))
    threads = max(1, 2 // len(urls))
    args = ["wrk", f"-t{threads}", f"-c{share}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s", "--latency"]
    script = None
    if rate:
        gap_ms = max(0.0, share / (rate / len(urls)) * 1000.0)
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f"function delay() return math.random(0, {int(2 * gap_ms)}) end\n")
        script.close()
        args += ["-s", script.name]
    procs = [subprocess.Popen([*args, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for url in urls]
    outputs = [proc.communicate(timeout=duration_s + 60)[0] for proc in procs]
    if script:
        os.unlink(script.name)
    parsed = [_parse_wrk(out) for out in outputs]
    return {"rps": sum(p["rps"] for p in parsed), "p50_ms": statistics.mean(p["p50_ms"] for p in parsed),
            "p99_ms": max(p["p99_ms"] for p in parsed), "errors": sum(p["errors"] for p in parsed),
            "requests": sum(p["requests"] for p in parsed)}


def _parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000.0 if unit == "us" else value * 1000.0 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(g) for g in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "errors": failed, "requests": requests}


async def _builtin(host: str, port: int, path: str, duration_s: float, connections: int, rate: float | None,
                   tls: bool = False) -> dict:
    latencies: list[float] = []
    errors = 0
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    stop_at = time.perf_counter() + duration_s
    gap = connections / rate if rate else 0.0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port, ssl=client_tls() if tls else None,
                                                       server_hostname="localhost" if tls else None)
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            length = re.search(rb"(?i)content-length: (\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            else:  # chunked
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            latencies.append(time.perf_counter() - start)
            if gap:
                await asyncio.sleep(gap * 2 * (hash(start) % 1000) / 1000)
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "errors": errors, "requests": len(latencies)}


def load(ports: list[int], path: str, duration_s: float, connections: int, rate: float | None = None,
         tls: bool = False) -> dict[str, float]:
    if shutil.which("wrk"):
        scheme = "https" if tls else "http"
        return run_wrk([f"{scheme}://127.0.0.1:{port}{path}" for port in ports], duration_s, connections, rate)
    return asyncio.run(_builtin_many(ports, path, duration_s, connections, rate, tls))


async def _builtin_many(ports: list[int], path: str, duration_s: float, connections: int, rate: float | None,
                        tls: bool = False) -> dict:
    share = max(1, connections // len(ports))
    parts = await asyncio.gather(*(
        _builtin("127.0.0.1", port, path, duration_s, share, rate / len(ports) if rate else None, tls)
        for port in ports))
    return {"rps": sum(p["rps"] for p in parts), "p50_ms": statistics.mean(p["p50_ms"] for p in parts),
            "p99_ms": max(p["p99_ms"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "requests": sum(p["requests"] for p in parts)}


# ------------------------------------------------------------------ front ends


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, for both front ends."""
    from lichen.gateway import certificates

    now = certificates.utc_now()
    ca_key, key = certificates.new_key(), certificates.new_key()
    ca = certificates.make_ca(ca_key, "bench CA", now)
    cert = certificates.make_server_cert(ca, ca_key, key, ["localhost", "127.0.0.1"], now)
    (directory / "bench.crt").write_bytes(certificates.cert_pem(cert))
    (directory / "bench.key").write_bytes(certificates.key_pem(key))
    return directory / "bench.crt", directory / "bench.key"


def negotiated(port: int) -> str:
    """The protocol and cipher a default client negotiates with the front end on ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_tls().wrap_socket(raw, server_hostname="localhost") as s:
            cipher = s.cipher()
            return f"{s.version()} {cipher[0] if cipher else '?'}"


class Stack:
    def __init__(self, profile: bool, tls: bool = False, tracing_endpoint: str | None = None,
                 baseline_src: Path | None = None) -> None:
        self.tls = tls
        self.tmp = Path(tempfile.mkdtemp(prefix="lichen-bench-"))
        self.procs: list[subprocess.Popen] = []
        # Two single-process replicas (one per core), as `lichen up` would run them. Every front end spreads
        # requests over both: nginx and Lichen per request, "direct" with one load generator per replica.
        self.backend_ports = [free_port(), free_port()]
        for index, port in enumerate(self.backend_ports):
            self.procs.append(subprocess.Popen(
                [PY, str(BACKEND), "--port", str(port), "--replica", f"b{index}"],
                cwd=BACKEND.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.backend_ports:
            wait_http(port)
        ssl_flag, ssl_lines, tls_settings = "", "", {}
        if tls:
            from lichen.gateway.tls import INTERMEDIATE_CIPHERS

            cert, key = make_certificate(self.tmp)
            ssl_flag = " ssl"
            ssl_lines = (f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; "
                         f"ssl_ciphers {INTERMEDIATE_CIPHERS}; ssl_prefer_server_ciphers on; "
                         "ssl_session_cache shared:SSL:10m;")
            tls_settings = {"tls": {"cert_file": str(cert), "key_file": str(key)}}
        self.nginx_port = None
        nginx = ensure_nginx()
        if nginx:
            self.nginx_port = free_port()
            (self.tmp / "nginx.conf").write_text(
                NGINX_CONF.format(dir=self.tmp, port=self.nginx_port, ssl_flag=ssl_flag, ssl_lines=ssl_lines,
                                  servers=" ".join(f"server 127.0.0.1:{p};" for p in self.backend_ports)))
            subprocess.run([nginx, "-c", str(self.tmp / "nginx.conf"), "-p", str(self.tmp)], check=True,
                           stderr=subprocess.DEVNULL)
            wait_http(self.nginx_port, tls=tls)
        self.lichen_port = free_port()
        config = {
            "host": "127.0.0.1", "port": self.lichen_port,
            "routes": [{"prefix": "/", "service": "backend"}],
            "services": {"backend": {"endpoints": [{"url": f"http://127.0.0.1:{p}", "replica": f"b{i}"}
                                                   for i, p in enumerate(self.backend_ports)],
                                     "discover_idempotent": False}},
            "settings": tls_settings,
        }
        (self.tmp / "gateway.json").write_text(json.dumps(config))
        command = [LICHEN, "gateway", "--config", str(self.tmp / "gateway.json")]
        self.gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.lichen_port, tls=tls)
        self.extra: dict[str, tuple[int, subprocess.Popen]] = {}
        """more gateways (``--tracing``): name -> (port, process)"""
        variants: dict[str, tuple[dict, dict[str, str]]] = {}
        if tracing_endpoint is not None:
            variants["trace_0pct"] = ({"tracing": {"endpoint": tracing_endpoint, "sampling_ratio": 0.0}}, {})
            variants["trace_100pct"] = ({"tracing": {"endpoint": tracing_endpoint, "sampling_ratio": 1.0}}, {})
        if baseline_src is not None:  # the same config, served by an earlier commit's code
            variants["baseline"] = ({}, {"PYTHONPATH": str(baseline_src)})
        for name, (extra_config, env) in variants.items():
            port = free_port()
            (self.tmp / f"{name}.json").write_text(json.dumps({**config, "port": port, **extra_config}))
            cmd = ([PY, "-c", "from lichen.cli.main import run; run()"] if env else [LICHEN]) + \
                ["gateway", "--config", str(self.tmp / f"{name}.json")]
            self.extra[name] = (port, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                       env={**os.environ, **env}, cwd=self.tmp if env else None))
            wait_http(port, tls=tls)

    def pids(self, front: str) -> list[int]:
        """The processes serving a front end: the replicas for direct, nginx's master for nginx, the gateway."""
        if front == "lichen":
            return [self.gateway.pid]
        if front in self.extra:
            return [self.extra[front][1].pid]
        if front == "nginx":
            pid_file = self.tmp / "nginx.pid"
            return [int(pid_file.read_text())] if pid_file.exists() else []
        return [proc.pid for proc in self.procs]

    def close(self) -> None:
        for proc in [self.gateway, *(p for _, p in self.extra.values())]:
            proc.send_signal(signal.SIGTERM)
        for proc in [self.gateway, *(p for _, p in self.extra.values())]:
            proc.wait(timeout=60)
        if self.nginx_port:
            pid_file = self.tmp / "nginx.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGQUIT)
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=30)
        time.sleep(0.2)  # nginx removes its pid file as it exits
        shutil.rmtree(self.tmp, ignore_errors=True)


def encoder_costs(n: int = 5000) -> dict[str, float]:
    """µs per span to make and encode the same gateway spans: the OpenTelemetry SDK (a ``ReadableSpan`` and its
    OTLP encoder) against lichen.gateway.spans (one request path tuple written as protobuf)."""
    import random as rnd

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from lichen.gateway.spans import SpanEncoder, resource_bytes, wrap_spans

    now = time.time_ns()
    records = [(rnd.getrandbits(128), rnd.getrandbits(64), rnd.getrandbits(64), now, now + 1500, "GET", "/api",
                "recommend", 200, "r1", f"/api/items/{i % 50}".encode(), "127.0.0.1") for i in range(n)]
    resource, scope = Resource.create({"service.name": "lichen-gateway"}), InstrumentationScope("lichen.gateway")
    started = time.perf_counter()
    spans = [ReadableSpan(name="GET /api", context=SpanContext(r[0], r[1], False, TraceFlags(1)),
                          parent=SpanContext(r[0], r[2], True, TraceFlags(1)), resource=resource,
                          attributes={"http.request.method": r[5], "url.path": r[10].decode(), "http.route": r[6],
                                      "lichen.service": r[7], "http.response.status_code": r[8],
                                      "client.address": r[11], "lichen.revision": r[9]},
                          kind=SpanKind.SERVER, start_time=r[3], end_time=r[4], instrumentation_scope=scope)
             for r in records]
    sdk_made = time.perf_counter()
    for i in range(0, n, 512):
        encode_spans(spans[i:i + 512]).SerializeToString()
    sdk_done = time.perf_counter()
    encoder, lean_resource = SpanEncoder(), resource_bytes({"service.name": "lichen-gateway"})
    fields = [encoder.span_field(r) for r in records]
    for i in range(0, n, 512):
        wrap_spans(fields[i:i + 512], lean_resource)
    lean_done = time.perf_counter()
    return {"sdk_make_us": (sdk_made - started) / n * 1e6, "sdk_encode_us": (sdk_done - sdk_made) / n * 1e6,
            "lichen_us": (lean_done - sdk_done) / n * 1e6}


def span_counts(port: int) -> dict[str, float]:
    """``lichen_gateway_spans_total`` by outcome, read from a gateway's own metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r'^lichen_gateway_spans_total\{outcome="(\w+)"\} (\S+)$',
                                                                 text, re.M)}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children (nginx's workers), from /proc."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            try:
                times = member.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    return total


def profile_gateway(stack: Stack, duration_s: float, connections: int) -> list[str]:
    """Sample the gateway with py-spy (CPU only) under the trivial load; the 15 hottest lines, by self time."""
    spy = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    if not os.path.exists(spy):
        return ["py-spy not found: pip install py-spy"]
    raw = stack.tmp / "profile.raw"
    sampler = subprocess.Popen([spy, "record", "-p", str(stack.gateway.pid), "-d", str(max(2, int(duration_s))),
                                "-r", "250", "-f", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    load([stack.lichen_port], WORKLOADS["trivial"], duration_s + 2, connections, tls=stack.tls)
    _, err = sampler.communicate(timeout=120)
    if not raw.exists():
        return [f"py-spy failed: {err.decode(errors='replace').strip()[:300]}"]
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        leaf = stack_text.rsplit(";", 1)[-1]
        leaves[leaf] = leaves.get(leaf, 0) + int(count)
        total += int(count)
    ranked = sorted(leaves.items(), key=lambda item: -item[1])[:15]
    return [f"{100 * n / total:5.1f}%  {leaf}" for leaf, n in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="front ends alternate; the median round is reported")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--tls", action="store_true", help="HTTPS at nginx and the gateway (same certificate and "
                        "ciphers), trivial workload only")
    parser.add_argument("--tracing", action="store_true", help="the gateway with tracing off, at 0 %% and at 100 %% "
                        "sampling (spans to a local OTLP receiver), trivial workload only")
    parser.add_argument("--baseline", metavar="REV", help="with --tracing: also an earlier commit's gateway")
    args = parser.parse_args()
    tls = args.tls
    receiver, baseline_src, worktree = None, None, None
    if args.tracing:
        from lichen.testing.otlp import OtlpReceiver

        receiver = OtlpReceiver(keep=False)
        if args.baseline:
            worktree = Path(tempfile.mkdtemp(prefix="lichen-baseline-")) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                           check=True, capture_output=True)
            baseline_src = worktree / "src"
    stack = Stack(args.profile, tls, receiver.endpoint if receiver else None, baseline_src)
    results: dict[str, dict[str, dict[str, float]]] = {}
    fronts = {"direct": None if tls else stack.backend_ports,
              "nginx": [stack.nginx_port] if stack.nginx_port else None, "lichen": [stack.lichen_port]}
    if args.tracing:
        fronts = {"lichen": [stack.lichen_port], **{name: [port] for name, (port, _) in stack.extra.items()}}
    workloads = {"trivial": WORKLOADS["trivial"]} if tls or args.tracing else WORKLOADS
    generator = "wrk" if shutil.which("wrk") else "built-in asyncio"
    print(f"load generator: {generator}; {os.cpu_count()} CPUs; {args.connections} connections; "
          f"{args.duration:g} s per run, {args.rounds} rounds; load average before: {os.getloadavg()[0]:.1f}")
    live = {name: port for name, port in fronts.items() if port is not None}
    if tls:
        sessions = {name: negotiated(ports[0]) for name, ports in live.items()}
        same = len(set(sessions.values())) == 1
        print("TLS negotiated with the same client: " + "; ".join(f"{k} {v}" for k, v in sessions.items())
              + (" (the same)" if same else " (DIFFERENT: the comparison is not like for like)"))
    profile_lines: list[str] = []

    def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
        ordered = sorted(runs, key=lambda r: r["rps"])
        return ordered[len(ordered) // 2]

    try:
        for workload, path in workloads.items():
            for ports in live.values():
                load(ports, path, 1.0, args.connections, tls=tls)  # warm up pools and caches
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in live}
            for _ in range(args.rounds):  # alternate front ends so a noisy neighbour hits all of them alike
                for name, port in live.items():
                    pids = stack.pids(name)
                    before = cpu_seconds(pids)
                    run = load(port, path, args.duration, args.connections, tls=tls)
                    run["cpu_us_per_request"] = (cpu_seconds(pids) - before) / max(1, run["requests"]) * 1e6
                    runs[name].append(run)
            results[workload] = {name: dict(median_of(r)) for name, r in runs.items()}
            for name, r in runs.items():  # CPU per request is steadier than throughput: take its own median
                values = sorted(x["cpu_us_per_request"] for x in r)
                results[workload][name]["cpu_us_per_request"] = values[len(values) // 2]
            slowest = min(r["rps"] for r in results[workload].values())
            half_runs: dict[str, list[dict[str, float]]] = {name: [] for name in live}
            for _ in range(args.rounds):
                for name, port in live.items():
                    half_runs[name].append(load(port, path, args.duration, 16, rate=slowest / 2, tls=tls))
            for name in live:
                p50s = sorted(r["p50_ms"] for r in half_runs[name])
                rates = sorted(r["rps"] for r in half_runs[name])
                results[workload][name].update(half_rps=rates[len(rates) // 2], half_p50_ms=p50s[len(p50s) // 2])
        if args.profile:
            profile_lines = profile_gateway(stack, args.duration, args.connections)
        spans = {name: span_counts(port) for name, (port, _) in stack.extra.items() if name.startswith("trace_")}
    finally:
        stack.close()
        if receiver is not None:
            receiver.close()
        if worktree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)

    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes on this machine share its CPUs)")
    print()
    print(f"{'workload':<9} {'front end':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
          f" {'CPU us/req':>10} {'half-load req/s':>16} {'half-load p50 ms':>17}")
    for workload, fronts_results in results.items():
        for name, r in fronts_results.items():
            print(f"{workload:<9} {name:<8} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {int(r['errors']):>6}"
                  f" {r['cpu_us_per_request']:>10.0f} {r['half_rps']:>16.0f} {r['half_p50_ms']:>17.2f}")
    print("CPU us/req: CPU time of that front end's own processes per request (direct: the replicas; nginx: its")
    print("master and workers; lichen: the gateway) — the proxy's cost, steadier than throughput on a busy machine.")
    print()
    targets = {"trivial": 0.5, "cpu_2ms": 0.9}
    for workload, wanted in targets.items():
        if workload not in results:
            continue
        r = results[workload]
        over = " over TLS" if tls else ""
        if "nginx" in r:
            ratio = r["lichen"]["rps"] / r["nginx"]["rps"]
            print(f"{workload}{over}: lichen/nginx throughput = {r['lichen']['rps']:.0f} / {r['nginx']['rps']:.0f} "
                  f"= {ratio:.2f} (target >= {wanted}) {'MET' if ratio >= wanted else 'NOT MET'}")
        if "direct" not in r:
            if "nginx" in r:
                print(f"{workload}{over}: proxy CPU per request, lichen / nginx = "
                      f"{r['lichen']['cpu_us_per_request']:.0f} / {r['nginx']['cpu_us_per_request']:.0f} us; "
                      f"p50 at half load {r['lichen']['half_p50_ms']:.2f} / {r['nginx']['half_p50_ms']:.2f} ms")
            continue
        print(f"{workload}: lichen/direct throughput = {r['lichen']['rps'] / r['direct']['rps']:.2f}")
        if "nginx" in r:
            print(f"{workload}: proxy CPU per request, lichen / nginx = {r['lichen']['cpu_us_per_request']:.0f} / "
                  f"{r['nginx']['cpu_us_per_request']:.0f} us = {r['lichen']['cpu_us_per_request'] / max(1e-9, r['nginx']['cpu_us_per_request']):.1f}x")
        added = r["lichen"]["half_p50_ms"] - r["direct"]["half_p50_ms"]
        print(f"{workload}: added p50 at half load, lichen - direct = {added:.2f} ms (target <= 1 ms) "
              f"{'MET' if added <= 1.0 else 'NOT MET'}"
              + (f"; nginx - direct = {r['nginx']['half_p50_ms'] - r['direct']['half_p50_ms']:.2f} ms" if "nginx" in r else ""))
    if args.tracing:
        r = results["trivial"]
        off = r["lichen"]
        for name in ("trace_0pct", "trace_100pct", "baseline"):
            if name not in r:
                continue
            ratio = r[name]["rps"] / off["rps"]
            verdict = f" (target >= 0.8) {'MET' if ratio >= 0.8 else 'NOT MET'}" if name == "trace_100pct" else ""
            print(f"tracing: {name} / off throughput = {r[name]['rps']:.0f} / {off['rps']:.0f} = {ratio:.2f}{verdict}; "
                  f"CPU per request {r[name]['cpu_us_per_request']:.0f} / {off['cpu_us_per_request']:.0f} us")
        if "baseline" in r:
            ratio = off["rps"] / r["baseline"]["rps"]
            print(f"tracing off vs {args.baseline} (no tracing code): {off['rps']:.0f} / {r['baseline']['rps']:.0f} "
                  f"= {ratio:.2f} throughput, CPU per request {off['cpu_us_per_request']:.0f} / "
                  f"{r['baseline']['cpu_us_per_request']:.0f} us")
        costs = encoder_costs()
        sdk_total = costs["sdk_make_us"] + costs["sdk_encode_us"]
        print(f"per span, made and encoded as OTLP protobuf: OpenTelemetry SDK {sdk_total:.1f} us "
              f"({costs['sdk_make_us']:.1f} making the ReadableSpan, {costs['sdk_encode_us']:.1f} encoding) / "
              f"lichen.gateway.spans {costs['lichen_us']:.1f} us = {sdk_total / costs['lichen_us']:.1f}x")
        for name, counts in spans.items():
            print(f"spans of {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()))
                  + (f"; the receiver got {receiver.posts} posts, {receiver.received_bytes / 1e6:.1f} MB"
                     if receiver is not None and name == "trace_100pct" else ""))
    if args.json:
        print(json.dumps(results, indent=2))
    if profile_lines:
        print("\nwhere the gateway's CPU time goes at saturation, trivial handler (py-spy, share of samples):")
        print("\n".join(profile_lines))


if __name__ == "__main__":
    main()
