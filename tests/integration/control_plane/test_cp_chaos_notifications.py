"""`lichen chaos` with an alert receiver held down, on a real app under `lichen up`: an alert fires during the
run (the load itself raises it), the controller's deliveries to a real webhook receiver are refused for the fault's
window, and the outbox delivers every notification once it lifts; the report counts none lost. A receiver that
truly stays down past the run loses them, and the hypothesis fails."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import yaml
from cp_harness import FAST_PROBES, LICHEN, wait_until
from webhook_receivers import WebhookReceiver

pytestmark = pytest.mark.slow

RULES = """
groups:
- name: chaos
  interval: 500ms
  rules:
  - alert: UnderLoad
    expr: sum(rate(lichen_requests_total{service="web"}[2s])) > 25
    for: 1s
"""


def _app(make_app, hook: WebhookReceiver):
    app = make_app()
    (app.dir / "load.rules.yml").write_text(RULES)
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": 2,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    observability = {"scrape_interval_s": "500ms", "scrape_timeout_s": "400ms", "evaluation_interval_s": "500ms",
                     "default_rules": False, "rules": ["load.rules.yml"],
                     "receivers": [{"name": "hook", "webhook": hook.url}],
                     "route": {"group_wait_s": "500ms", "group_interval_s": "1s", "repeat_interval_s": "1h"}}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "chaosnotes", "gateway": {"port": app.gateway_port},
                                                         "services": {"web": service},
                                                         "observability": observability}))
    app.up()
    return app


def _experiment(app, faults: list[dict], duration: str) -> str:
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "receiver", "load": {"route": "/web/whoami", "rate": 50},
                                    "duration": duration, "faults": faults,
                                    "hypotheses": ["no notification lost", "recovered within 30s"]}))
    return str(path)


def _outbox(app, since: float) -> list[dict]:
    with app.client() as client:
        return client.notifications(since)["notifications"]


def test_a_receiver_down_for_a_while_loses_no_notification(make_app) -> None:
    hook = WebhookReceiver()
    hook.start()
    try:
        app = _app(make_app, hook)
        path = _experiment(app, [{"kind": "receiver_down", "receiver": "hook", "at": "500ms", "for_s": "5s"}], "12s")
        done = app.cli("chaos", str(app.dir), path, "--json", check=False, timeout_s=180)
        report = json.loads(done.stdout)
        fault_ends = report["started_wall"] + 0.5 + 5.0
        notes = report["notifications"]
        assert notes["created"] >= 1 and notes["lost"] == 0 and notes["delivered"] == notes["created"], notes
        fired = [(at, body) for at, _, body in hook.records if body["status"] == "firing"
                 and body["groupLabels"].get("alertname") == "UnderLoad"]
        assert fired and all(at >= fault_ends - 0.05 for at, _ in fired), (fault_ends, hook.records)
        refused = [n for n in _outbox(app, report["started_wall"]) if n["receiver"] == "hook"]
        assert refused and refused[0]["attempts"] >= 2 and "receiver down" in refused[0]["last_error"], refused
        assert all(n["outcome"] == "delivered" for n in refused)
        fault = report["faults"][0]
        assert fault["kind"] == "receiver_down" and fault["target"] == "hook" and fault["detected_s"] is None
        assert fault["recovered_s"] is not None and fault["recovered_s"] >= 5.0, fault  # not before it lifted
        assert [(v["hypothesis"], v["held"]) for v in report["hypotheses"]] == [
            ("no notification lost", True), ("recovered within 30s", True)]
        assert done.returncode == 0 and report["held"]
        with app.client() as client:
            assert client.notifications()["down_until"] == {}  # nothing is left held down
    finally:
        hook.stop()


def test_a_receiver_that_stays_down_loses_notifications_and_the_hypothesis_fails(make_app) -> None:
    hook = WebhookReceiver()
    hook.start()
    try:
        app = _app(make_app, hook)
        hook.stop()  # truly down for the whole run: connections refused, past the run's wait for the outbox
        path = _experiment(app, [{"kind": "receiver_down", "receiver": "hook", "at": "500ms", "for_s": "1s"}], "6s")
        done = app.cli("chaos", str(app.dir), path, "--json", check=False, timeout_s=180)
        report = json.loads(done.stdout)
        notes = report["notifications"]
        assert notes["created"] >= 1 and notes["lost"] == notes["pending"] >= 1, notes
        assert any("ConnectError" in (item["last_error"] or "") and item["attempts"] >= 2
                   for item in notes["lost_items"]), notes  # retried, refused each time
        assert report["hypotheses"][0] == {"hypothesis": "no notification lost", "held": False,
                                           "measured": f"{notes['lost']} lost"}
        assert report["faults"][0]["recovered_s"] is None  # its outbox never drained
        assert done.returncode == 1 and not report["held"]
    finally:
        hook.stop()


def test_an_interrupted_run_lifts_the_receiver_fault(make_app) -> None:
    hook = WebhookReceiver()
    hook.start()
    try:
        app = _app(make_app, hook)
        path = _experiment(app, [{"kind": "receiver_down", "receiver": "hook", "at": "500ms", "for_s": "60s"}], "70s")
        process = subprocess.Popen([*LICHEN, "chaos", str(app.dir), path], cwd=app.dir, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)

        def down() -> dict:
            with app.client() as client:
                return client.notifications()["down_until"]

        wait_until(lambda: "hook" in down(), "the receiver held down", timeout_s=30)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130 and "cleared receiver_down of hook" in err, err
        assert down() == {}
    finally:
        hook.stop()
