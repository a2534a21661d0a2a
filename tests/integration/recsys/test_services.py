"""The recsys online services against real ``lichen serve`` processes.

A small synthetic dataset and EASE models are built with the app's own
classes, registered and promoted in a temporary app directory; each test
then talks HTTP to real replicas.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lichen import ModelRegistry
from waiting import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
RECSYS_DIR = REPO / "examples" / "recsys"
if str(RECSYS_DIR) not in sys.path:
    sys.path.insert(0, str(RECSYS_DIR))

from recsys import datasets  # noqa: E402
from recsys.interactions import IdMap, interaction_matrix  # noqa: E402
from recsys.models import EASE  # noqa: E402
from recsys.synthesizing import synthesize  # noqa: E402

GENRES = ["Action", "Comedy", "Drama"]
MODEL = "recommender"


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(target: str, app: Path, **env: str) -> Replica:
    return wait_ready(spawn(target, app, **env), target)


def spawn(target: str, app: Path, **env: str) -> Replica:
    port = free_port()
    log = app / f"serve-{target.split(':')[1]}-{port}.log"
    full_env = {**os.environ, "LICHEN_APP_DIR": str(app), "MODEL_POLL_S": "0.2", **env}
    full_env.pop("LICHEN_MODEL_REGISTRY", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from lichen.cli.main import run; run()", "serve", target,
             "--port", str(port), "--app-dir", str(RECSYS_DIR)],
            env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    return Replica(proc, f"http://127.0.0.1:{port}", log)


def wait_ready(replica: Replica, target: str) -> Replica:
    proc, log = replica.proc, replica.log
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{target} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(replica.url + "/readyz", timeout=2).status_code == 200:
                return replica
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            replica.stop()
            raise AssertionError(f"{target} never became ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def build_model(app: Path, l2: float) -> tuple[Path, str]:
    data = synthesize(n_users=120, n_items=90, mean_per_user=25, seed=3)
    items = {int(i): {"title": f"Movie {i} (1995)", "genres": [GENRES[int(i) % 3]], "year": 1995}
             for i in set(data.items.tolist())}
    manifest = datasets.write_dataset(app / ".lichen" / "datasets", data, items=items)
    users, item_map = IdMap.of(data.users), IdMap.of(data.items)
    model = EASE(l2=l2).fit(interaction_matrix(data, users, item_map), users, item_map)
    out = app / f"ease-{l2}"
    model.save(out)
    return out, manifest["version"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("recsys-app")
    registry = ModelRegistry(app / ".lichen" / "models")
    for l2 in (10.0, 500.0):
        path, dataset_version = build_model(app, l2)
        registry.register(MODEL, path, params={"l2": l2}, metrics={}, dataset_version=dataset_version)
    registry.promote(MODEL, 1)
    return app


@pytest.fixture(scope="module")
def recommender(app: Path) -> Iterator[Replica]:
    replica = start("recsys.services:Recommender", app)
    yield replica
    replica.stop()


def _history(app: Path, user_id: int) -> list[int]:
    from recsys.models import load_model

    return load_model(ModelRegistry(app / ".lichen" / "models").get(MODEL, 1).path).history(user_id)


def test_known_user_gets_unseen_items_then_a_cached_answer(app: Path, recommender: Replica) -> None:
    first = httpx.get(f"{recommender.url}/v1/recommendations/5", params={"k": 7}, timeout=10)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model_version"] == 1 and body["user_id"] == 5 and body["cached"] is False
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 7 == len(set(ids))
    assert not set(ids) & set(_history(app, 5)), "seen items must be excluded"
    assert all(item["title"].startswith("Movie ") for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    again = httpx.get(f"{recommender.url}/v1/recommendations/5", params={"k": 7}, timeout=10).json()
    assert again["cached"] is True and again["items"] == body["items"]
    metrics = httpx.get(f"{recommender.url}/metrics", timeout=10).text
    assert "recsys_cache_hits_total 1.0" in metrics


def test_filters_by_genre_and_exclusions(recommender: Replica) -> None:
    plain = httpx.get(f"{recommender.url}/v1/recommendations/9", params={"k": 5}, timeout=10).json()
    banned = [item["item_id"] for item in plain["items"][:2]]
    body = httpx.get(
        f"{recommender.url}/v1/recommendations/9",
        params={"k": 5, "genre": "comedy", "exclude": ",".join(map(str, banned))},
        timeout=10,
    ).json()
    assert len(body["items"]) == 5
    assert all(item["genres"] == ["Comedy"] for item in body["items"])
    assert not {item["item_id"] for item in body["items"]} & set(banned)
    bad = httpx.get(f"{recommender.url}/v1/recommendations/9", params={"exclude": "x,1"}, timeout=10)
    assert bad.status_code == 422 and "exclude" in bad.text


def test_cold_user_posts_a_history(recommender: Replica) -> None:
    unknown = httpx.get(f"{recommender.url}/v1/recommendations/999999", timeout=10)
    assert unknown.status_code == 404 and "POST /v1/recommendations" in unknown.json()["detail"]
    history = _known_items(recommender)[:4]
    body = httpx.post(f"{recommender.url}/v1/recommendations", json={"history": history, "k": 6}, timeout=10)
    assert body.status_code == 200, body.text
    ids = [item["item_id"] for item in body.json()["items"]]
    assert len(ids) == 6 and not set(ids) & set(history)
    assert httpx.post(f"{recommender.url}/v1/recommendations", json={"history": [], "k": 6}, timeout=10).status_code == 422
    too_many = httpx.post(f"{recommender.url}/v1/recommendations", json={"history": history, "k": 1000}, timeout=10)
    assert too_many.status_code == 422 and "k" in too_many.text
    strangers = httpx.post(f"{recommender.url}/v1/recommendations", json={"history": [10**9]}, timeout=10)
    assert strangers.status_code == 422 and "none of the 1 item ids is known" in strangers.text


def _known_items(replica: Replica) -> list[int]:
    body = httpx.get(f"{replica.url}/v1/recommendations/1", params={"k": 20}, timeout=10).json()
    return [item["item_id"] for item in body["items"]]


def test_similar_items(app: Path) -> None:
    replica = start("recsys.services:Similar", app)
    try:
        item = _known_items_of(app)[0]
        body = httpx.get(f"{replica.url}/v1/items/{item}/similar", params={"k": 5}, timeout=10)
        assert body.status_code == 200, body.text
        ids = [i["item_id"] for i in body.json()["items"]]
        assert len(ids) == 5 and item not in ids
        assert httpx.get(f"{replica.url}/v1/items/{10**9}/similar", timeout=10).status_code == 404
    finally:
        replica.stop()


def _known_items_of(app: Path) -> list[int]:
    from recsys.models import load_model

    return load_model(ModelRegistry(app / ".lichen" / "models").get(MODEL, 1).path).known_items


def test_events_are_idempotent_and_durable(app: Path) -> None:
    from recsys.ingesting import read_events

    events_dir = app / ".lichen" / "events"
    shutil.rmtree(events_dir, ignore_errors=True)
    replica = start("recsys.services:Events", app)
    try:
        event = {"event_id": "evt-1", "user_id": 5, "item_id": 42, "rating": 4.5, "timestamp": 1700000000}
        first = httpx.post(f"{replica.url}/v1/events", json=event, timeout=10)
        assert first.status_code == 200, first.text
        assert first.json()["duplicate"] is False
        again = httpx.post(f"{replica.url}/v1/events", json=event, timeout=10)
        assert again.json()["duplicate"] is True
        second = httpx.post(f"{replica.url}/v1/events", json={**event, "event_id": "evt-2", "item_id": 43}, timeout=10)
        assert second.json()["duplicate"] is False
        for bad, field in [({**event, "rating": 9}, "rating"), ({**event, "user_id": "x"}, "user_id"),
                           ({"event_id": "e3", "user_id": 1}, "item_id"), ({**event, "event_id": ""}, "event_id")]:
            response = httpx.post(f"{replica.url}/v1/events", json=bad, timeout=10)
            assert response.status_code == 422 and field in response.text, response.text
        lines = [json.loads(line) for f in events_dir.glob("*.jsonl") for line in f.read_text().splitlines()]
        assert [(e["event_id"], e["item_id"]) for e in lines] == [("evt-1", 42), ("evt-2", 43)]
        table = read_events(events_dir)
        assert len(table) == 2 and not table.bad_rows
    finally:
        replica.stop()
    # A restarted replica still knows evt-1.
    replica = start("recsys.services:Events", app)
    try:
        assert httpx.post(f"{replica.url}/v1/events", json=event, timeout=10).json()["duplicate"] is True
    finally:
        replica.stop()


def test_promotion_is_picked_up_without_failing_a_request(app: Path, recommender: Replica) -> None:
    registry = ModelRegistry(app / ".lichen" / "models")
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def hammer(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not stop.is_set():
                user = 1 + (worker * 7 + n) % 100
                n += 1
                response = client.get(f"{recommender.url}/v1/recommendations/{user}", params={"k": 5})
                if response.status_code == 404:  # a synthetic user without history
                    continue
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(statuses) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.promote(MODEL, 2)
        while 2 not in versions[-10:] and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.rollback(MODEL)
        settled = len(versions)
        while not (versions[settled:] and versions[-1] == 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200]}"
    assert 2 in versions, "the promoted version was never served"
    assert versions[-1] == 1, "the rollback was never served"
    swap = versions.index(2)
    assert set(versions[:swap]) == {1}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_cache_is_shared_by_replicas(app: Path, tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                              "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    replicas: list[Replica] = []
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "redis never listened"
                time.sleep(0.05)
        replicas = [spawn("recsys.services:Recommender", app, REDIS_URL=url) for _ in range(2)]
        for replica in replicas:
            wait_ready(replica, "recsys.services:Recommender")
        a = httpx.get(f"{replicas[0].url}/v1/recommendations/11", params={"k": 4}, timeout=10).json()
        b = httpx.get(f"{replicas[1].url}/v1/recommendations/11", params={"k": 4}, timeout=10).json()
        assert a["cached"] is False and b["cached"] is True and a["items"] == b["items"]
    finally:
        for replica in replicas:
            replica.stop()
        redis.terminate()
        redis.wait(timeout=30)


def test_demo_serves_prints_examples_and_stops_cleanly_on_ctrl_c(app: Path, tmp_path: Path) -> None:
    import signal

    import psutil

    demo_app = tmp_path / "app"
    shutil.copytree(RECSYS_DIR / "recsys", demo_app / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(app / ".lichen", demo_app / ".lichen", ignore=shutil.ignore_patterns("events", "logs"))
    base = free_port()
    while any(free_port_taken(base + i) for i in (1, 2, 3)):
        base = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "demo.py"), "--app", str(demo_app), "--skip-pipeline",
         "--serve-only", "--port-base", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        text = "".join(lines)
        rec_url = f"http://127.0.0.1:{base + 1}"
        assert f"curl '{rec_url}/v1/recommendations/1?k=5'" in text
        body = httpx.get(f"{rec_url}/v1/recommendations/1", params={"k": 5}, timeout=10).json()
        assert len(body["items"]) == 5
        event = {"event_id": "demo-test", "user_id": 1, "item_id": 2}
        assert httpx.post(f"http://127.0.0.1:{base + 3}/v1/events", json=event, timeout=10).status_code == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"demo left processes behind: {alive}"


def free_port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_events_reach_served_histories_at_once(app: Path, recommender: Replica) -> None:
    from recsys.services import Event, EventLog

    before = httpx.get(f"{recommender.url}/v1/recommendations/7", params={"k": 5}, timeout=10).json()
    top = before["items"][0]["item_id"]
    log = EventLog(app / ".lichen" / "events")
    log.append(Event(event_id="fresh-7", user_id=7, item_id=top, rating=5.0), time.time())
    after = httpx.get(f"{recommender.url}/v1/recommendations/7", params={"k": 5}, timeout=10).json()
    assert after["cached"] is False, "a new event must invalidate the user's cached answer"
    assert top not in [item["item_id"] for item in after["items"]], "an item just rated is excluded"
    # A user known only through events is not cold any more.
    stranger = 10**6 + 7
    assert httpx.get(f"{recommender.url}/v1/recommendations/{stranger}", timeout=10).status_code == 404
    log.append(Event(event_id="fresh-s", user_id=stranger, item_id=top), time.time())
    warm = httpx.get(f"{recommender.url}/v1/recommendations/{stranger}", params={"k": 3}, timeout=10)
    assert warm.status_code == 200 and top not in [item["item_id"] for item in warm.json()["items"]]
    log.close()


def test_a_damaged_version_is_never_swapped_in(app: Path, recommender: Replica) -> None:
    registry = ModelRegistry(app / ".lichen" / "models")
    source, dataset_version = build_model(app, 50.0)
    damaged = registry.register(MODEL, source, params={"l2": 50.0}, dataset_version=dataset_version)
    (damaged.path / "model.json").write_text((damaged.path / "model.json").read_text() + " ")
    serving = registry.promoted(MODEL).version
    registry.promote(MODEL, damaged.version)
    try:
        deadline = time.monotonic() + 30
        while "does not match its registered checksum" not in recommender.log.read_text():
            assert time.monotonic() < deadline, "the poller never tried the damaged version"
            time.sleep(0.1)
        body = httpx.get(f"{recommender.url}/v1/recommendations/5", params={"k": 3}, timeout=10)
        assert body.status_code == 200 and body.json()["model_version"] == serving
    finally:
        registry.rollback(MODEL)


def test_a_recommendation_is_one_trace_of_gateway_and_replica_spans_in_a_real_otlp_receiver(app: Path,
                                                                                           tmp_path: Path) -> None:
    """`lichen up` of the reference app with observability.tracing: one recommendation request through the
    gateway is exported, as OTLP/HTTP protobuf, as the gateway's span and the recommender replica's child span."""
    import yaml

    from lichen.testing.otlp import OtlpReceiver

    traced = tmp_path / "traced"
    shutil.copytree(RECSYS_DIR / "recsys", traced / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(app / ".lichen", traced / ".lichen", ignore=shutil.ignore_patterns("events", "logs"))
    spec = yaml.safe_load((RECSYS_DIR / "lichen.yaml").read_text())
    spec["services"]["recommender"]["replicas"] = 1
    port = free_port()
    spec["gateway"]["port"] = port
    lichen = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
    with OtlpReceiver() as receiver:
        spec["observability"]["tracing"] = {"endpoint": receiver.endpoint}
        (traced / "lichen.yaml").write_text(yaml.safe_dump(spec))
        try:
            started = subprocess.run([*lichen, "up", str(traced), "--detach"], capture_output=True, text=True,
                                     timeout=180)
            assert started.returncode == 0, started.stdout + started.stderr
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/recommendations/1", params={"k": 5}, timeout=10)
            assert answer.status_code == 200 and len(answer.json()["items"]) == 5, answer.text
            spans = receiver.wait_for(lambda found: {s.service for s in found} >= {"lichen-gateway", "recommender"})
        finally:
            subprocess.run([*lichen, "down", str(traced)], capture_output=True, timeout=120)
    gateway = next(s for s in spans if s.service == "lichen-gateway" and s.attributes["lichen.service"] == "recommender")
    replica = next(s for s in spans if s.service == "recommender")
    assert gateway.trace_id == replica.trace_id and replica.parent_span_id == gateway.span_id
    assert gateway.name == "GET /v1/recommendations" and gateway.attributes["url.path"] == "/v1/recommendations/1"
    assert replica.kind == "SERVER" and replica.name == "GET /v1/recommendations/{user_id}"
    assert replica.attributes["http.response.status_code"] == 200 and receiver.bad_posts == 0


def test_users_with_precomputed_candidates_get_what_scoring_their_history_gives(tmp_path: Path) -> None:
    # every user gets candidates (min_history 0), so each request below goes through them; the answers
    # must be those of scoring the whole history, with events and a genre filter too
    from recsys.models import load_model
    from recsys.services import Event, EventLog

    app = tmp_path / "app"
    path, dataset_version = build_model(app, 10.0)
    model = load_model(path)
    assert model.precompute_candidates(min_history=0, count=30) == len(model.users)
    model.save(path)
    registry = ModelRegistry(app / ".lichen" / "models")
    registry.register(MODEL, path, params={"l2": 10.0}, metrics={}, dataset_version=dataset_version)
    registry.promote(MODEL, 1)
    plain = load_model(path)
    plain.candidates = None
    replica = start("recsys.services:Recommender", app, CACHE_SIZE="0")
    log = EventLog(app / ".lichen" / "events")
    try:
        def served(user_id: int, **params: str) -> list[int]:
            response = httpx.get(f"{replica.url}/v1/recommendations/{user_id}", params={"k": 5, **params}, timeout=10)
            assert response.status_code == 200, response.text
            return [item["item_id"] for item in response.json()["items"]]

        for user_id in plain.users.ids[:15].tolist():
            assert served(user_id) == [item for item, _ in plain.recommend(plain.history(user_id), 5)]
        user_id = int(plain.users.ids[0])
        top = served(user_id)[0]
        log.append(Event(event_id="fresh-c", user_id=user_id, item_id=top, rating=5.0), time.time())
        expected = [item for item, _ in plain.recommend([*plain.history(user_id), top], 5)]
        assert served(user_id) == expected and top not in expected
        keep = {item for item in plain.items.ids.tolist() if GENRES[item % 3] == GENRES[0]}
        expected = [item for item, _ in plain.recommend([*plain.history(user_id), top], 5, filter_fn=keep.__contains__)]
        assert served(user_id, genre=GENRES[0]) == expected
    finally:
        log.close()
        replica.stop()
