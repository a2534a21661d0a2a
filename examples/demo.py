"""`make demo`: the recommender reference app end to end.

1. Runs the batch pipeline (ingest → features → train → evaluate) with
   ``lichen run`` on ``--data PATH`` (default: ``../shared/data/ml-100k`` when
   it exists, else MovieLens 100K downloaded, else a synthetic dataset).
2. Serves the online services: under ``lichen up`` (replicas, probes and the
   gateway) when the control plane answers through the gateway, otherwise
   one ``lichen serve`` process per service.
3. Prints the URL and example ``curl`` lines, then runs until Ctrl-C and
   stops every process it started.

Example: python examples/demo.py --data ../shared/data/ml-100k
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "recsys"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-100k"
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
SERVICES = {  # name -> (target, fallback port offset, a path to probe)
    "recommender": ("recsys.services:Recommender", 1, "/v1/recommendations/1?k=1"),
    "similar": ("recsys.services:Similar", 2, "/v1/items/1/similar?k=1"),
    "events": ("recsys.services:Events", 3, None),
}


def say(text: str) -> None:
    arrow = "\033[1;36m==>\033[0m" if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else "==>"
    print(f"{arrow} {text}", flush=True)


def lichen(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*LICHEN, *args], cwd=REPO, **kwargs)
    if check and result.returncode != 0:
        raise SystemExit(result.returncode)
    return result


def run_pipeline(data: Path | None) -> None:
    args = ["run", "--app", str(APP)]
    if data is not None:
        args += ["--data", str(data)]
        say(f"running the pipeline on {data}")
    else:
        say("no dataset found: ingest downloads MovieLens 100K if it can, else generates a synthetic set")
    lichen(*args)


def answers(url: str, timeout_s: float, *, recommendations: bool = False) -> bool:
    """Whether ``url`` answers 200 (with recommendations in the body when asked) before the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and (not recommendations or "items" in response.json()):
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return False


def gateway_port() -> int:
    from lichen import load_spec

    return load_spec(APP / "lichen.yaml").gateway.port


def port_taken(port: int) -> bool:
    """Whether a process listens on ``port`` (as the gateway binds: a socket in TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def try_lichen_up() -> str | None:
    """Start the app under the control plane; the gateway URL, or None when unavailable."""
    if lichen("up", "--help", check=False, capture_output=True).returncode != 0:
        return None
    port = gateway_port()
    if port_taken(port):
        say(f"port {port} (gateway.port in {_shown(APP / 'lichen.yaml')}) is taken by another process; "
            "serving each service with `lichen serve` instead")
        return None
    say("starting the services under `lichen up` (replicas, probes, self-healing)")
    started = lichen("up", str(APP), "--detach", "--wait", "--timeout-s", "180", check=False)
    if started.returncode != 0:
        say("`lichen up` did not bring the app up; falling back to `lichen serve`")
        lichen("down", str(APP), check=False)
        return None
    url = f"http://127.0.0.1:{port}"
    if answers(url + SERVICES["recommender"][2], timeout_s=60, recommendations=True):
        return url
    say(f"the gateway at {url} does not serve this app (not wired in yet, or the port is taken); "
        "falling back to one `lichen serve` per service")
    lichen("down", str(APP), check=False)
    return None


def serve_each(children: list[subprocess.Popen], port_base: int) -> dict[str, str]:
    urls = {}
    logs = APP / ".lichen" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LICHEN_APP_DIR": str(APP)}
    for name, (target, offset, _probe) in SERVICES.items():
        port = port_base + offset
        log = (logs / f"demo-{name}.log").open("ab")
        children.append(subprocess.Popen(
            [*LICHEN, "serve", target, "--port", str(port), "--app-dir", str(APP)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        urls[name] = f"http://127.0.0.1:{port}"
    for name, url in urls.items():
        if not answers(url + "/readyz", timeout_s=120):
            raise SystemExit(f"{name} did not become ready; see {logs / f'demo-{name}.log'}")
    return urls


def print_examples(urls: dict[str, str]) -> None:
    rec, sim, events = urls["recommender"], urls["similar"], urls["events"]
    print()
    say("the recommender is serving; try:")
    print(f"  curl '{rec}/v1/recommendations/1?k=5'")
    print(f"  curl '{rec}/v1/recommendations/1?k=5&genre=Comedy'")
    print(f"  curl -X POST {rec}/v1/recommendations -H 'content-type: application/json' "
          "-d '{\"history\": [50, 172, 181], \"k\": 5}'")
    print(f"  curl '{sim}/v1/items/50/similar?k=5'")
    print(f"  curl -X POST {events}/v1/events -H 'content-type: application/json' "
          "-d '{\"event_id\": \"demo-1\", \"user_id\": 1, \"item_id\": 50, \"rating\": 5}'")
    print(f"  lichen models list --app {_shown(APP)}        # promote/rollback: picked up live")
    print(f"  lichen runs --app {_shown(APP)}")
    print(f"  lichen energy -C {_shown(APP)} --window 15m     # energy, carbon, SCI per service and revision")
    print()
    say("Ctrl-C stops everything")


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    global APP
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="ratings file or directory (default: ../shared/data/ml-100k)")
    parser.add_argument("--skip-pipeline", action="store_true", help="serve the model already promoted")
    parser.add_argument("--serve-only", action="store_true", help="use `lichen serve`, not `lichen up`")
    parser.add_argument("--port-base", type=int, default=8080, help="`lichen serve` ports are BASE+1, +2, +3")
    parser.add_argument("--app", type=Path, default=APP, help="the app directory (default: examples/recsys)")
    args = parser.parse_args(argv)
    APP = args.app.resolve()
    data = args.data if args.data is not None else (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    children: list[subprocess.Popen] = []
    under_up = False
    try:
        if not args.skip_pipeline:
            run_pipeline(data)
        gateway = None if args.serve_only else try_lichen_up()
        if gateway is not None:
            under_up = True
            urls = {name: gateway for name in SERVICES}
            say(f"gateway: {gateway}   (replicas: lichen status -C {_shown(APP)}; "
                f"dashboard: lichen dashboard -C {_shown(APP)})")
        else:
            urls = serve_each(children, args.port_base)
        print_examples(urls)
        while True:
            for child in children:
                if child.poll() is not None:
                    say(f"a service exited with {child.returncode}; stopping")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print()
        say("stopping")
        return 0
    finally:
        if under_up:
            lichen("down", str(APP), check=False)
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


if __name__ == "__main__":
    sys.exit(main())
