"""The Prometheus query API on a running controller (`lichen up`): `up` per replica with its labels.

A real controller runs two services (three replicas); the test asks the
controller's own ``/api/v1/query`` for ``up`` and checks one series per
replica, labelled with the service, revision, replica id and ``instance``
(``127.0.0.1:PORT``) that ``lichen status`` reports, plus the controller's own
target and the app's gateway. It also checks the token guard, ``/federate``, the default rule pack
being loaded, and that a replica killed with SIGKILL reads ``up 0`` until its
replacement is scraped.
"""

from __future__ import annotations

import os
import signal


import httpx
import pytest
from cp_harness import wait_until
from waiting import free_port

pytestmark = pytest.mark.slow
OBSERVABILITY = {"scrape_interval_s": 0.5, "scrape_timeout_s": 0.5, "evaluation_interval_s": 0.5}


def _query(base: str, token: str, expr: str) -> list[dict]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["data"]["result"]


def test_up_for_each_replica_with_its_labels(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 2}, worker={"replicas": 1})
    import yaml

    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = OBSERVABILITY
    spec["gateway"] = {"port": free_port()}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    app.up()
    with app.client() as client:
        base, token = client.info["url"], app.workspace.token_path.read_text().strip()

    assert httpx.get(f"{base}/api/v1/query", params={"query": "up"}, timeout=10).status_code == 401

    def replicas_up() -> list[dict] | None:
        ready = {r["id"]: r for r in app.replicas("Ready")}
        series = [s for s in _query(base, token, 'up{job="replica"} == 1')]
        got = {s["metric"].get("replica") for s in series}
        return series if len(ready) == 3 and got == set(ready) else None

    series = wait_until(replicas_up, "up == 1 for all three replicas", timeout_s=60)
    by_id = {r["id"]: r for r in app.status()["replicas"]}
    for s in series:
        labels = s["metric"]
        replica = by_id[labels["replica"]]
        assert labels["__name__"] == "up"
        assert labels["service"] == replica["service"]
        assert labels["revision"] == replica["revision"]
        assert labels["instance"] == f"127.0.0.1:{replica['port']}"
        assert s["value"][1] == "1"
    assert sorted(s["metric"]["service"] for s in series) == ["api", "api", "worker"]

    gateway = wait_until(lambda: _query(base, token, 'up{job="gateway"} == 1'), "the gateway scraped", timeout_s=30)
    assert gateway[0]["metric"]["instance"] == f"127.0.0.1:{spec['gateway']['port']}"
    assert _query(base, token, 'count({job="gateway", __name__!="up"})')[0]["value"][1] != "0"

    # The controller scrapes itself every 0.5 s: the replicas became ready above, but the last scrape of its own
    # lichen_replicas gauge may predate that, so wait for a scrape that saw both api replicas ready.
    controller = wait_until(lambda: _query(base, token, 'up{job="controller"}'), "the controller scraped", timeout_s=30)
    assert len(controller) == 1 and controller[0]["value"][1] == "1"
    wait_until(lambda: [s["value"][1] for s in _query(base, token, 'lichen_replicas{state="ready", service="api"}')]
               == ["2"], 'lichen_replicas{state="ready", service="api"} == 2 in a controller scrape', timeout_s=30)

    rules = httpx.get(f"{base}/api/v1/rules", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    names = {g["name"] for g in rules["data"]["groups"]}
    assert {"lichen-defaults-api", "lichen-defaults-worker", "lichen-defaults-scraping"} <= names

    federated = httpx.get(f"{base}/federate", params={"match[]": 'up{service="worker"}'},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert federated.status_code == 200 and 'service="worker"' in federated.text

    # a replica killed with SIGKILL reads up == 0 (scrape fails) or vanishes, and its replacement comes up
    victim = by_id[next(s["metric"]["replica"] for s in series if s["metric"]["service"] == "worker")]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        ready = [r for r in app.replicas("Ready") if r["service"] == "worker"]
        if not ready or ready[0]["pid"] == victim["pid"]:
            return False
        fresh = _query(base, token, f'up{{service="worker", instance="127.0.0.1:{ready[0]["port"]}"}}')
        return bool(fresh) and fresh[0]["value"][1] == "1"

    wait_until(replaced, "the replacement worker scraped with up == 1", timeout_s=60)
