"""`lichen chaos`'s pause_dependency on a real app under `lichen up` whose service reads through a real
redis-server: Redis is stopped (SIGSTOP) for the fault's window, the service degrades without failing a request,
and Redis runs again afterwards, also when the run is interrupted. A port with nothing on it, or one of Lichen's
own, is refused, located, before anything is injected."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from cp_harness import FAST_PROBES, HERE, LICHEN, free_port, wait_until

pytestmark = pytest.mark.slow
redis = pytest.importorskip("redis")


@pytest.fixture
def redis_server(tmp_path: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind",
                                "127.0.0.1", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            assert process.poll() is None, "redis-server exited"
            return False

    wait_until(answers, "redis-server to answer PING")
    yield port, process, client
    process.send_signal(signal.SIGCONT)  # whatever happened, never leave it stopped
    process.terminate()
    process.wait(timeout=30)
    client.close()


def _app(make_app, redis_port: int):
    app = make_app()
    shutil.copy(HERE / "cachesvc.py", app.dir / "cachesvc.py")
    service = {"entrypoint": "cachesvc:Cached", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": 2,
               "env": {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
               "routes": [{"prefix": "/cache", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "chaosdeps", "gateway": {"port": app.gateway_port},
                                                         "services": {"cache": service}}))
    app.up()
    return app


def _experiment(app, fault: dict, duration: str, hypotheses: list[str] = ()) -> str:
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "redis", "load": {"route": "/cache/get", "rate": 50},
                                    "duration": duration, "faults": [fault], "hypotheses": list(hypotheses)}))
    return str(path)


def _redis_errors(app) -> int:
    """The most Redis errors one replica has counted (each answer carries its replica's count)."""
    seen: dict[str, int] = {}
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            body = client.get(f"http://127.0.0.1:{app.gateway_port}/cache/get").json()
            seen[body["replica"]] = body["redis_errors"]
    return max(seen.values())


def test_a_paused_redis_degrades_the_service_without_a_failed_request_and_runs_again(make_app, redis_server) -> None:
    port, process, client = redis_server
    app = _app(make_app, port)
    assert _redis_errors(app) == 0 and int(client.get("hits")) >= 20
    path = _experiment(app, {"kind": "pause_dependency", "port": port, "at": "1s", "for_s": "3s"}, "7s",
                       ["failed requests == 0", "recovered within 30s"])
    chaos = subprocess.Popen([*LICHEN, "chaos", str(app.dir), path, "--json"], cwd=app.dir, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_until(lambda: psutil.Process(process.pid).status() == psutil.STATUS_STOPPED, "redis-server stopped",
               timeout_s=30)
    out, err = chaos.communicate(timeout=180)
    report = json.loads(out)
    fault = report["faults"][0]
    assert fault["kind"] == "pause_dependency" and fault["target"] == f"redis-server:{port}", (fault, err)
    assert fault["detected_s"] is None and fault["recovered_s"] is not None and fault["recovered_s"] >= 3.0, fault
    assert f"pause_dependency redis-server:{port} (pid {process.pid}) for 3 s" in err and \
        f"resumed pid {process.pid}" in err, err
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED and client.ping()  # running again
    assert fault["failed"] == 0 and report["load"]["error_ratio"] == 0.0
    assert report["load"]["answered"] == report["load"]["scheduled"] == 350
    assert chaos.returncode == 0 and report["held"], report
    assert _redis_errors(app) > 0  # the service did meet the outage: its reads timed out, and it carried on


def test_an_interrupted_run_resumes_the_paused_dependency(make_app, redis_server) -> None:
    port, process, client = redis_server
    app = _app(make_app, port)
    path = _experiment(app, {"kind": "pause_dependency", "port": port, "at": "500ms", "for_s": "60s"}, "70s")
    chaos = subprocess.Popen([*LICHEN, "chaos", str(app.dir), path], cwd=app.dir, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_until(lambda: psutil.Process(process.pid).status() == psutil.STATUS_STOPPED, "redis-server stopped",
               timeout_s=30)
    chaos.send_signal(signal.SIGINT)
    _, err = chaos.communicate(timeout=60)
    assert chaos.returncode == 130 and f"resumed stopped pid {process.pid}" in err, err
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED and client.ping()


def test_a_port_with_nothing_or_lichen_on_it_is_refused_before_anything_is_injected(make_app, redis_server) -> None:
    port, process, _ = redis_server
    app = _app(make_app, port)
    pids = {r["pid"] for r in app.replicas()} | {app.status()["gateway"]["pid"]}
    for bad_port, message in ((free_port(), "no process listens on TCP port"),
                              (app.gateway_port, "one of Lichen's own processes")):
        path = _experiment(app, {"kind": "pause_dependency", "port": bad_port, "at": "1s", "for_s": "2s"}, "5s")
        done = app.cli("chaos", str(app.dir), path, check=False)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "experiment.yaml:" in done.stderr and "faults[0].port" in done.stderr and message in done.stderr, \
            done.stderr
    assert {r["pid"] for r in app.replicas()} | {app.status()["gateway"]["pid"]} == pids
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED
