"""examples/sentiment_feedback under the real CLI: one request id across two services, and a service's own 503.

The example is copied to a temporary directory (its gateway on a free port, a lexicon reload that lasts
long enough to be seen), started with ``lichen up --detach``, called through the gateway, and stopped with
``lichen down``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from waiting import free_port, wait_until

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment_feedback"
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
RELOAD_S = 60


def lichen(*args: str, cwd: Path, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "COLUMNS": "200"})


class Running:
    def __init__(self, root: Path) -> None:
        self.dir = root
        spec = yaml.safe_load((root / "lichen.yaml").read_text())
        self.port = free_port()
        spec["gateway"]["port"] = self.port
        spec["services"]["sentiment"]["env"]["LEXICON_RELOAD_S"] = str(RELOAD_S)
        (root / "lichen.yaml").write_text(yaml.safe_dump(spec))
        self.url = f"http://127.0.0.1:{self.port}"

    def log_lines(self, service: str) -> list[dict]:
        """The service's replica log lines (``lichen logs``), parsed."""
        result = lichen("logs", service, "-n", "1000", "-C", str(self.dir), cwd=self.dir, timeout_s=60)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = []
        for line in result.stdout.splitlines():
            _, _, text = line.partition(" | ")
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
        return lines

    def lines_with(self, service: str, request_id: str) -> list[dict]:
        return [line for line in self.log_lines(service) if line.get("request_id") == request_id]

    def processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("LICHEN_CONTROLLER") == str(self.dir) and \
                        process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("example") / "sentiment_feedback"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".lichen", "__pycache__"))
    running = Running(root)
    try:
        started = lichen("up", str(root), "--detach", cwd=root)
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        lichen("down", str(root), cwd=root)
        leftovers = running.processes()
        for process in leftovers:
            process.kill()
        assert not leftovers, f"processes survived lichen down: {leftovers}"


def test_one_request_id_goes_from_the_client_through_feedback_to_sentiment_and_back(app: Running) -> None:
    request_id = f"chain-{uuid.uuid4().hex[:12]}"
    with httpx.Client(timeout=30.0) as client:
        response = client.post(f"{app.url}/v1/feedback", json={"text": "great service, thanks"},
                               headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == request_id
        assert response.json()["label"] == "positive" and response.json()["id"] >= 1
        minted = client.post(f"{app.url}/v1/feedback", json={"text": "slow and broken"})  # no id: the gateway's
        assert minted.status_code == 200 and minted.json()["label"] == "negative"
    minted_id = minted.headers["x-request-id"]
    assert minted_id and minted_id != request_id

    for rid in (request_id, minted_id):
        # sentiment saw the caller's id: its access line for /v1/score and its own "scored" line carry it
        seen = wait_until(lambda rid=rid: app.lines_with("sentiment", rid), f"sentiment's lines with {rid}", 60,
                          every_s=0.5)
        wait_until(lambda rid=rid: {line["event"] for line in app.lines_with("sentiment", rid)} >= {"request", "scored"},
                   f"sentiment's request and scored lines for {rid}", 60, every_s=0.5)
        access = [line for line in app.lines_with("sentiment", rid) if line["event"] == "request"]
        assert [(line["path"], line["status"]) for line in access] == [("/v1/score", 200)], seen
        feedback = wait_until(lambda rid=rid: [line for line in app.lines_with("feedback", rid)
                                               if line["event"] == "request"], f"feedback's line for {rid}", 60,
                              every_s=0.5)
        assert [(line["path"], line["status"]) for line in feedback] == [("/v1/feedback", 200)]


def test_sentiments_own_503_reaches_the_client_with_its_body_through_feedback_and_the_gateway(app: Running) -> None:
    with httpx.Client(timeout=30.0) as client:
        reload = client.put(f"{app.url}/sentiment/v1/lexicon", json={"words": {"good": 1.0, "bad": -1.0}})
        assert reload.status_code == 200 and reload.json() == {"reloading": True, "words": 2}

        direct = client.post(f"{app.url}/sentiment/v1/score", json={"text": "good"},
                             headers={"X-Request-ID": "reload-direct"})
        assert direct.status_code == 503
        assert direct.json() == {"detail": "lexicon is reloading"}  # the service's body, not "upstream error"
        assert direct.headers["retry-after"] == str(RELOAD_S) and direct.headers["x-request-id"] == "reload-direct"

        through = client.post(f"{app.url}/v1/feedback", json={"text": "good"}, headers={"X-Request-ID": "reload-1"})
        assert through.status_code == 503
        assert through.json() == {"detail": "sentiment: lexicon is reloading"}
        assert through.headers["retry-after"] == str(RELOAD_S) and through.headers["x-request-id"] == "reload-1"
    refused = wait_until(lambda: [line for line in app.lines_with("sentiment", "reload-1") if line["event"] == "request"],
                         "sentiment's 503 line for reload-1", 60, every_s=0.5)
    assert [line["status"] for line in refused] == [503]
