"""One real app for the OpenAPI fuzzers: ``lichen up`` of a typed SDK service and the sentiment example.

:func:`running_app` starts it (about 3 s); tests/fuzz/conftest.py shares it
across the control-API and service fuzzers for the whole session. It ends
with ``POST /v1/shutdown`` (checked against the schema: the one operation the
fuzzers leave out, since it ends the run) and ``lichen down``, after which no
process of the app may be left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import schemathesis
import yaml
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from waiting import free_port, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


@dataclass(frozen=True)
class FuzzApp:
    dir: Path
    control_url: str
    token: str
    gateway_url: str
    replica_urls: dict[str, str]  # service -> its one replica's URL

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _cli(app_dir: Path, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICHEN, *args], cwd=app_dir, capture_output=True, text=True, timeout=timeout_s,
                          check=False, env={**os.environ, "COLUMNS": "200"})


def _app_processes(app_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("LICHEN_CONTROLLER") == str(app_dir) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


@contextlib.contextmanager
def running_app(app_dir: Path) -> Iterator[FuzzApp]:
    """``lichen up`` of three services in ``app_dir``; ``POST /v1/shutdown`` and ``lichen down`` when done."""
    shutil.copy(HERE / "fuzzsvc.py", app_dir / "fuzzsvc.py")
    shutil.copytree(REPO / "examples" / "sentiment_feedback" / "sentiment_feedback", app_dir / "sentiment_feedback")
    spec = {
        "app": "fuzzapp",
        "gateway": {"port": free_port()},
        "services": {
            "target": {"entrypoint": "fuzzsvc:FuzzTarget", "replicas": 1, "routes": ["/v1/orders", "/v1/items"],
                       "termination_grace_s": 2},
            # no routes: served at /sentiment, prefix stripped; a lexicon replacement builds at once, so a
            # score is never refused with the service's own 503 while the fuzzer runs
            "sentiment": {"entrypoint": "sentiment_feedback.sentiment:Sentiment", "replicas": 1,
                          "env": {"LEXICON_RELOAD_S": "0"}, "termination_grace_s": 2},
            # what the control-API fuzzer restarts, stops and asks about by its real name
            "spare": {"entrypoint": "fuzzsvc:FuzzTarget", "replicas": 1, "termination_grace_s": 1},
        },
    }
    (app_dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    try:
        up = _cli(app_dir, "up", str(app_dir), "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        lichen = app_dir / ".lichen"
        control_url = f"http://127.0.0.1:{(lichen / 'control.port').read_text().strip()}"
        token = (lichen / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}

        def replicas() -> dict[str, str] | None:
            services = httpx.get(f"{control_url}/v1/endpoints", headers=headers, timeout=5).json()["services"]
            ready = {name: entries[0]["url"] for name, entries in services.items() if entries}
            return ready if set(ready) == {"target", "sentiment", "spare"} else None

        urls = wait_until(replicas, "every service ready", timeout_s=60)
        gateway_url = f"http://127.0.0.1:{spec['gateway']['port']}"
        wait_until(lambda: httpx.get(f"{gateway_url}/v1/items", timeout=5).status_code == 200,
                   "the gateway routes to target", timeout_s=30)
        app = FuzzApp(app_dir, control_url, token, gateway_url, urls)
        yield app
        shutdown_last(app)
    finally:
        _cli(app_dir, "down", str(app_dir))
        leftovers = _app_processes(app_dir)
        for process in leftovers:
            process.kill()
        assert not leftovers, f"processes survived lichen down: {leftovers}"


def shutdown_last(app: FuzzApp) -> None:
    """``POST /v1/shutdown``, validated against the schema, then wait for the controller to exit."""
    schema = schemathesis.openapi.from_url(f"{app.control_url}/openapi.json")
    case = schema["/v1/shutdown"]["POST"].Case()
    response = case.call_and_validate(base_url=app.control_url, headers=app.auth,
                                      checks=[not_a_server_error, response_schema_conformance], timeout=30)
    assert response.json()["stopping"] is True, response.text
    controller = int((app.dir / ".lichen" / "controller.pid").read_text().strip())
    wait_until(lambda: not _alive(controller), "the controller to exit after POST /v1/shutdown", timeout_s=60)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
