"""`lichen up` after editing one service's module rolls that service only: the other keeps its replicas."""

from __future__ import annotations

import httpx
import pytest
from cp_harness import wait_until

pytestmark = pytest.mark.slow


def _ready(app, service: str) -> dict[str, int]:  # noqa: ANN001
    return {r["id"]: r["pid"] for r in app.replicas("Ready") if r["service"] == service}


def _rolled(stdout: str) -> str:
    """The services `lichen up` says it rolls (its 'rolling update of X, Y started ...' line)."""
    lines = [line for line in stdout.splitlines() if line.startswith("rolling update of ")]
    return lines[0].removeprefix("rolling update of ").partition(" started")[0] if lines else ""


def test_editing_one_services_module_rolls_only_that_service(make_app) -> None:
    app = make_app()
    (app.dir / "alpha.py").write_text("from ctlsvc import Probe\n\n\nclass Alpha(Probe):\n    pass\n")
    (app.dir / "beta.py").write_text("from ctlsvc import Probe\n\n\nclass Beta(Probe):\n    pass\n")
    app.write_spec(alpha={"entrypoint": "alpha:Alpha"}, beta={"entrypoint": "beta:Beta"})
    app.up()
    wait_until(lambda: len(_ready(app, "alpha")) == 1 and len(_ready(app, "beta")) == 1, "both services ready",
               timeout_s=60)
    revisions = {n: s["revision"] for n, s in app.status()["services"].items()}
    alpha_before, beta_before = _ready(app, "alpha"), _ready(app, "beta")

    (app.dir / "alpha.py").write_text("from ctlsvc import Probe\n\n\nclass Alpha(Probe):\n    edited = True\n")
    result = app.cli("up", str(app.dir))
    assert _rolled(result.stdout) == "alpha", result.stdout

    status = app.status()["services"]
    assert status["beta"]["revision"] == revisions["beta"]
    assert status["alpha"]["revision"] != revisions["alpha"]
    new_alpha = wait_until(lambda: (r := [x for x in app.replicas("Ready") if x["service"] == "alpha"
                                         and x["revision"] == status["alpha"]["revision"]]) and r,
                           "alpha's new revision ready", timeout_s=60)
    assert new_alpha[0]["pid"] not in alpha_before.values()
    assert httpx.get(f"http://127.0.0.1:{new_alpha[0]['port']}/whoami", timeout=10).status_code == 200
    wait_until(lambda: not any(r["service"] == "alpha" and r["revision"] == revisions["alpha"]
                               for r in app.replicas()), "alpha's old replica gone", timeout_s=60)
    # beta was never touched: the same replica, the same process, the same revision
    assert _ready(app, "beta") == beta_before
    assert {r["revision"] for r in app.replicas() if r["service"] == "beta"} == {revisions["beta"]}
    assert not any(e["kind"] == "RevisionCreated" for e in app.events("beta"))

    (app.dir / "ctlsvc.py").write_text((app.dir / "ctlsvc.py").read_text() + "\n# a shared edit\n")
    shared = app.cli("up", str(app.dir))
    assert _rolled(shared.stdout) == "alpha, beta", shared.stdout
