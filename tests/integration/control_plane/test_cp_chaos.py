"""`lichen chaos` on a real app under `lichen up`, one fault kind per test, through the real CLI: the fault
happens, the report measures it, hypotheses are judged, nothing is left broken or orphaned; an experiment
that cannot run is refused, located, before anything is injected; an interrupted run undoes its faults."""

from __future__ import annotations

import json
import signal
import subprocess

import psutil
import pytest
import yaml
from cp_harness import FAST_PROBES, LICHEN, wait_until

pytestmark = pytest.mark.slow


def _app(make_app, replicas: int = 2):
    app = make_app()
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": replicas,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "chaos", "gateway": {"port": app.gateway_port},
                                                         "services": {"web": service}}))
    app.up()
    return app


def _experiment(app, faults: list[dict], hypotheses: list[str], duration: str = "8s") -> str:
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "load": {"route": "/web/whoami", "rate": 50}, "duration": duration,
                                    "faults": faults, "hypotheses": hypotheses}))
    return str(path)


def _chaos(app, experiment: str) -> tuple[int, dict]:
    done = app.cli("chaos", str(app.dir), experiment, "--json", check=False, timeout_s=180)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_kill_replica_loses_no_request_and_is_replaced(make_app) -> None:
    app = _app(make_app)
    before = {r["id"] for r in app.replicas("Ready")}
    code, report = _chaos(app, _experiment(app, [{"kind": "kill_replica", "service": "web", "at": "2s"}],
                                           ["failed requests == 0", "recovered within 60s", "no orphaned processes"]))
    fault = report["faults"][0]
    assert fault["kind"] == "kill_replica" and fault["target"] in before
    assert fault["detected_s"] is not None and fault["recovered_s"] is not None and fault["failed"] == 0
    assert report["load"]["answered"] == report["load"]["scheduled"] == 400
    assert code == 0 and report["held"] and report["orphans"] == []
    assert any(e["kind"] == "Exited" and e["replica"] == fault["target"] for e in app.events("web"))


def test_pause_replica_is_detected_and_resumed(make_app) -> None:
    app = _app(make_app)
    code, report = _chaos(app, _experiment(app, [{"kind": "pause_replica", "service": "web", "at": "2s",
                                                  "for_s": "3s"}], ["recovered within 60s"], duration="10s"))
    fault = report["faults"][0]
    assert fault["detected_s"] is not None and fault["recovered_s"] is not None, report
    for process in psutil.process_iter(["status"]):  # nothing is left stopped
        assert process.info["status"] != psutil.STATUS_STOPPED or process.pid == 0
    assert code == 0 and report["held"]


def test_a_rolling_restart_under_load_loses_no_request(make_app) -> None:
    app = _app(make_app)
    before = {r["id"] for r in app.replicas("Ready")}
    code, report = _chaos(app, _experiment(app, [{"kind": "rolling_restart", "service": "web", "at": "1s"}],
                                           ["failed requests == 0", "recovered within 60s"], duration="10s"))
    fault = report["faults"][0]
    assert fault["detected_s"] is None and fault["recovered_s"] is not None and fault["failed"] == 0, report
    assert not before & {r["id"] for r in app.replicas("Ready")}  # every replica was replaced
    assert code == 0 and report["held"], report


def test_kill_gateway_is_restarted_and_serves_again(make_app) -> None:
    app = _app(make_app, replicas=1)
    old = app.status()["gateway"]["pid"]
    code, report = _chaos(app, _experiment(app, [{"kind": "kill_gateway", "at": "2s"}],
                                           ["recovered within 60s", "no orphaned processes"]))
    fault = report["faults"][0]
    assert fault["target"] == "gateway" and fault["detected_s"] is not None and fault["recovered_s"] is not None
    assert app.status()["gateway"]["pid"] != old and not psutil.pid_exists(old) or \
        psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert code == 0 and report["held"], report


def test_kill_controller_fails_no_request_and_orphans_nothing(make_app) -> None:
    app = _app(make_app)
    old = app.controller_pid()
    code, report = _chaos(app, _experiment(app, [{"kind": "kill_controller", "at": "2s"}],
                                           ["failed requests == 0", "no orphaned processes"]))
    assert report["faults"][0]["recovered_s"] is not None and report["faults"][0]["failed"] == 0
    assert app.controller_pid() != old and report["orphans"] == []
    assert code == 0 and report["held"], report


def test_traffic_faults_delay_fail_and_reset_requests_then_end(make_app) -> None:
    app = _app(make_app)
    path = _experiment(app, [
        {"kind": "latency", "service": "web", "at": "1s", "for_s": "1.5s", "delay_ms": 300},
        {"kind": "errors", "service": "web", "at": "3s", "for_s": "1s", "percent": 50, "status": 500},
        {"kind": "reset", "service": "web", "at": "5s", "for_s": "1s"},
    ], ["recovered within 30s"], duration="8s")
    code, report = _chaos(app, path)
    load = report["load"]
    assert load["latency_ms"]["p99"] >= 250  # the 300 ms delay shows; 1.5 s of 8 s is more than 1 %
    assert 0 < load["statuses"].get("500", 0) < 100  # half of the 50 requests of that second, give or take
    assert load["failures"].get("reset", 0) >= 40  # every request of the reset's second
    latency, errors, reset = report["faults"]
    assert latency["failed"] == 0 and errors["failed"] > 0 and reset["failed"] >= 40
    assert all(f["detected_s"] is None and f["recovered_s"] is not None for f in report["faults"])
    assert code == 0 and report["held"], report
    assert app.status()["gateway"]["faults"] == {}  # nothing is left injected
    after = app.cli("loadtest", str(app.dir), "--route", "/web/whoami", "--rate", "50", "--duration", "1s", "--json")
    assert json.loads(after.stdout)["statuses"] == {"200": 50}


BAD = [
    ([{"kind": "unplug_cable", "at": "1s"}], [], "faults[0].kind", "expected one of"),
    ([{"kind": "kill_replica", "service": "nope", "at": "1s"}], [], "faults[0].service", "no service 'nope'"),
    ([{"kind": "pause_replica", "service": "web", "at": "1s"}], [], "faults[0].for_s", "required for pause_replica"),
    ([{"kind": "kill_gateway", "at": "30s"}], [], "faults[0].at", "is not within the run's 8 s"),
    ([{"kind": "kill_gateway", "at": "1s"}], ["no notification lost"], "hypotheses[0]",
     "cannot evaluate 'no notification lost': the app has no observability.receivers"),
    ([{"kind": "kill_gateway", "at": "1s"}], ["no notification kept"], "hypotheses", "cannot evaluate"),
    ([{"kind": "receiver_down", "receiver": "pager", "at": "1s", "for_s": "5s"}], [], "faults[0].receiver",
     "no alert receiver 'pager'"),
]


def test_a_bad_experiment_is_refused_located_before_anything_is_injected(make_app) -> None:
    app = _app(make_app, replicas=1)
    pids = {r["pid"] for r in app.replicas()} | {app.status()["gateway"]["pid"]}
    for faults, hypotheses, where, message in BAD:
        path = _experiment(app, faults, hypotheses)
        done = app.cli("chaos", str(app.dir), path, check=False)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "experiment.yaml:" in done.stderr and where in done.stderr and message in done.stderr, done.stderr
    assert {r["pid"] for r in app.replicas()} | {app.status()["gateway"]["pid"]} == pids  # nothing was touched


def test_an_interrupted_run_resumes_what_it_stopped(make_app) -> None:
    app = _app(make_app)
    path = _experiment(app, [{"kind": "pause_replica", "service": "web", "at": "1s", "for_s": "60s"}], [],
                       duration="70s")
    process = subprocess.Popen([*LICHEN, "chaos", str(app.dir), path], cwd=app.dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    stopped = wait_until(lambda: [p for p in psutil.process_iter(["status"])
                                  if p.info["status"] == psutil.STATUS_STOPPED], "a stopped replica", timeout_s=30)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and f"resumed stopped pid {stopped[0].pid}" in err, err
    assert psutil.Process(stopped[0].pid).status() != psutil.STATUS_STOPPED
