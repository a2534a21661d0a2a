"""Alert-driven rollback (issue 13): how long from a bad rolling update's first error to the end of its traffic.

Under a real `lichen up` (a temp app, the real CLI), a service with 2 replicas takes an open-loop POST load
(Poisson arrivals, bench/canary.py's client, which records which revision answered each request). A rolling
update to a revision that fails FAIL_RATIO of its requests is applied with `lichen up`. A rule file has

    ApiErrors: sum by (service) (rate(lichen_requests_total{status="500"}[WINDOW])) > THRESHOLD  for: FOR

and `remediation.rules` maps ApiErrors to `rollback` within 900 s of a rollout; the embedded Prometheus
scrapes every SCRAPE_S and evaluates every EVAL_S. Measured, per run (`--runs`, default 3):

* first error -> the alert's activeAt (pending: the rate window fills and crosses the threshold);
* activeAt -> the `Remediation` event (the issue's bound: the rule's ``for`` + one evaluation interval);
* activeAt -> the last request the bad revision answered (the rollback has completed for clients),
  against the issue's target: ``for`` + one evaluation interval + 2 s.

Kubernetes + Prometheus + Alertmanager has no built-in path from an alert to a rollback (flagger#1467);
Argo Rollouts runs its analysis only during a rollout.

Usage: .venv/bin/python bench/remediation.py [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp, wait_until  # noqa: E402
from autoscaling import free_port  # noqa: E402
from canary import SERVICE_CODE, OpenLoad  # noqa: E402

SERVICE = "work"
FAIL_RATIO = 0.3
RATE_PER_S = 100.0
SCRAPE_S, EVAL_S, FOR_S, WINDOW = 0.5, 1.0, 2.0, "5s"
THRESHOLD_PER_S = 5.0  # errors per second; the bad revision makes about 30 at 100 req/s
TARGET_SLACK_S = 2.0
RULES = f"""\
groups:
  - name: bench
    rules:
      - alert: ApiErrors
        expr: sum by (service) (rate(lichen_requests_total{{service="{SERVICE}",status="500"}}[{WINDOW}])) > {THRESHOLD_PER_S:g}
        for: {FOR_S:g}s
"""


class RemediationApp(BenchApp):
    def __init__(self, port: int) -> None:
        super().__init__(replicas=2)
        (self.dir / "benchsvc.py").write_text(SERVICE_CODE)
        (self.dir / "rules.yml").write_text(RULES)
        self.port, self.url = port, f"http://127.0.0.1:{port}/work"

    def write(self, env: dict[str, str]) -> None:
        work = {"entrypoint": "benchsvc:Work", "replicas": 2, "termination_grace_s": 2, "routes": ["/work"],
                "env": env, "rollout": {"max_surge": 1, "max_unavailable": 0}}
        spec = {"app": "remediation-bench", "gateway": {"port": self.port},
                "observability": {"scrape_interval_s": SCRAPE_S, "scrape_timeout_s": SCRAPE_S * 0.8,
                                  "evaluation_interval_s": EVAL_S, "rules": ["rules.yml"]},
                "remediation": {"defaults": False, "rules": [
                    {"alert": "ApiErrors", "action": "rollback", "within_s_of_rollout": 900}]},
                "services": {SERVICE: work}}
        (self.dir / "lichen.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    def api(self, path: str, **params: Any) -> Any:
        info = json.loads((self.dir / ".lichen" / "controller.json").read_text())
        token = (self.dir / ".lichen" / "token").read_text().strip()
        response = httpx.get(info["url"] + path, params=params, headers={"authorization": f"Bearer {token}"},
                             timeout=10)
        response.raise_for_status()
        return response.json()


def one_run(seed: int) -> dict[str, Any]:
    app = RemediationApp(free_port())
    app.write({"VERSION": "1"})
    try:
        app.cli("up", str(app.dir), "--detach")
        good = app.api("/v1/status")["services"][SERVICE]["revision"]
        load = OpenLoad(app.url, RATE_PER_S, seed)
        load.start()
        time.sleep(2.0)
        app.write({"VERSION": "2", "FAIL_RATIO": str(FAIL_RATIO)})
        app.cli("up", str(app.dir), "--detach")
        bad = app.api("/v1/status")["services"][SERVICE]["revision"]
        active_at: list[float] = []

        def watch() -> bool:  # the alert's activeAt, while it is pending or firing
            for alert in app.api("/api/v1/alerts")["data"]["alerts"]:
                if alert["labels"].get("alertname") == "ApiErrors" and not active_at:
                    active_at.append(_rfc3339(alert["activeAt"]))
            return any(e["kind"] == "RolloutRolledBack" for e in app.api("/v1/events", service=SERVICE, limit=200))

        wait_until(watch, "the alert-driven rollback", timeout_s=90, every_s=0.2)
        time.sleep(3.0)  # the drain, and a little traffic after it
        load.halt.set()
        load.join(30)
        events = app.api("/v1/events", service=SERVICE, limit=500)
    finally:
        app.down()
    remedied = min(e["at"] for e in events if e["kind"] == "Remediation")
    bad_records = [r for r in load.records if r[3] == bad]
    first_error = min(r[0] for r in bad_records if r[2] != "200")
    last_bad = max(r[0] + (r[1] or 0.0) for r in bad_records)
    pending = active_at[0] if active_at else None
    return {"good": good, "bad": bad, "requests": len(load.records), "bad_requests": len(bad_records),
            "bad_failed": sum(1 for r in bad_records if r[2] != "200"),
            "first_error_to_active_s": None if pending is None else round(pending - first_error, 2),
            "active_to_remediation_s": None if pending is None else round(remedied - pending, 2),
            "active_to_last_bad_s": None if pending is None else round(last_bad - pending, 2),
            "first_error_to_last_bad_s": round(last_bad - first_error, 2)}


def _rfc3339(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bound_s = FOR_S + EVAL_S + TARGET_SLACK_S
    print(f"rule: rate(errors[{WINDOW}]) > {THRESHOLD_PER_S:g}/s for {FOR_S:g} s; scrape {SCRAPE_S:g} s, evaluation "
          f"{EVAL_S:g} s; load {RATE_PER_S:g} req/s open loop; bad revision fails {FAIL_RATIO:.0%}")
    runs = [one_run(seed) for seed in range(args.runs)]
    print(f"{'run':>4} {'1st error->pending':>19} {'pending->action':>16} {'pending->last bad':>18} "
          f"{'1st error->last bad':>20} {'bad failed':>11}")
    for i, r in enumerate(runs):
        print(f"{i:>4} {r['first_error_to_active_s']!s:>17} s {r['active_to_remediation_s']!s:>14} s "
              f"{r['active_to_last_bad_s']!s:>16} s {r['first_error_to_last_bad_s']!s:>18} s "
              f"{r['bad_failed']:>5} of {r['bad_requests']}")
    completes = [r["active_to_last_bad_s"] for r in runs if r["active_to_last_bad_s"] is not None]
    worst = max(completes) if completes else None
    met = worst is not None and len(completes) == len(runs) and worst <= bound_s
    print(f"target: rollback completed within for + one evaluation interval + 2 s = {bound_s:g} s of the alert "
          f"going pending: {'met' if met else 'NOT met'} (worst {worst} s, median "
          f"{statistics.median(completes) if completes else None} s)")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "bound_s": bound_s, "met": met}, indent=2))


if __name__ == "__main__":
    main()
