"""A scheduled job under a real `lichen up`: it runs at the next minute and `lichen runs` shows it as scheduled."""

from __future__ import annotations

import json

import pytest
import yaml
from cp_harness import wait_until

pytestmark = pytest.mark.slow

STEP = "def tick(argv):\n    open('ticked.txt', 'a').write('tick\\n')\n"


def test_a_scheduled_job_runs_under_lichen_up(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    (app.dir / "cronsteps.py").write_text(STEP)
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["jobs"] = {"tick": {"entrypoint": "cronsteps:tick", "schedule": "* * * * *"}}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    up = app.up()
    assert "schedule" not in up.stderr, up.stderr  # no "not built yet" warning any more

    def scheduled_run() -> list[dict] | None:
        runs = json.loads(app.cli("runs", "--app", str(app.dir), "--json").stdout)
        done = [r for r in runs if r["pipeline_id"].startswith("cron-tick-") and r["status"] == "succeeded"]
        return done or None

    [run] = wait_until(scheduled_run, "the first scheduled run (at the next minute)", timeout_s=90, every_s=1)
    assert (app.dir / "ticked.txt").read_text() == "tick\n"
    events = [e for e in app.events("tick") if e["kind"] in ("CronStarted", "CronFinished")]
    assert [e["kind"] for e in events] == ["CronStarted", "CronFinished"] and run["pipeline_id"] in events[1]["message"]
    assert "schedule" in app.cli("runs", "--app", str(app.dir)).stdout
