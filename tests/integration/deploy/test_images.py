"""`lichen build` with real podman, and `podman kube play` of the rendered Deployments.

No registry is reachable here, so the images start from `localhost/lichen-base:bookworm`, a Debian root
filesystem that `.ci/build-base-image` makes with mmdebstrap once and caches outside the repo (the fixture
runs it when the image is missing). Podman runs with `.ci/containers.conf` (runc, and the ulimits these
machines allow).

`podman kube play` runs the chart's pod specs for real: the restricted security context, the env, the
args, the state volume (a podman volume standing for the PersistentVolumeClaim, seeded with a trained model)
and the probe endpoints. Two things are the test's, not the chart's: each container gets a `hostPort` so this
machine can reach it (a cluster reaches pods through Services, which podman ignores), and the probes are
called by the test, because podman 4.3 ignores readinessProbe and runs a liveness probe only under systemd.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy_fixtures import RECSYS
from waiting import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
LICHEN = str(Path(sys.executable).parent / "lichen")
PODMAN = shutil.which("podman")
BASE = "localhost/lichen-base:bookworm"
UID = 10001


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    if PODMAN is None:
        pytest.skip("podman not installed (apt-get install podman runc catatonit; .ci/run does)")
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / ".ci" / "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(REPO / ".ci" / "storage.conf"))
    if subprocess.run([PODMAN, "image", "exists", BASE], env=env).returncode != 0:
        subprocess.run([str(REPO / ".ci" / "build-base-image")], env=env, check=True, timeout=900)
    return env


def podman(env: dict[str, str], *args: str, check: bool = True, timeout: float = 120) -> str:
    assert PODMAN is not None
    done = subprocess.run([PODMAN, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def build(app: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([LICHEN, "build", str(app), "--base", BASE, "--tag", f"localhost/{name}", "--json"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def wait_ok(url: str, within_s: float = 60, container: tuple[dict[str, str], str] | None = None) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            logs = podman(container[0], "logs", container[1], check=False) if container else ""
            raise AssertionError(f"{url} never answered 200\n{logs[-3000:]}")
        time.sleep(0.2)


def host_uid(env: dict[str, str], container: str) -> int:
    pid = podman(env, "inspect", "--format", "{{.State.Pid}}", container).strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_the_init_app_image_serves_as_a_numeric_non_root_user_with_no_state_inside(
        tmp_path: Path, podman_env: dict[str, str]) -> None:
    app = tmp_path / "hello"
    assert subprocess.run([LICHEN, "init", str(app)], capture_output=True, timeout=60).returncode == 0
    (app / ".lichen").mkdir()
    (app / ".lichen" / "state.db").write_text("local state")
    (app / ".env").write_text("API_TOKEN=planted-secret-value")
    printed = subprocess.run([LICHEN, "build", str(app), "--print"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and "USER 10001:10001" in printed.stdout and "AS dependencies" in printed.stdout
    image = build(app, "hello", podman_env)
    assert image["image"] == f"localhost/hello:{image['revision']}" and image["builder"] == "podman"
    inspected = json.loads(podman(podman_env, "image", "inspect", image["image"]))[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001" and config["Entrypoint"][:4] == ["python", "-m", "lichen", "serve"]
    listing = podman(podman_env, "run", "--rm", "--entrypoint", "ls", image["image"], "-A", "/app")
    assert ".lichen" not in listing.split() and ".env" not in listing.split() and "lichen.yaml" in listing
    # the same app again: the same revision, and every layer from cache (so the very same image)
    again = build(app, "hello", podman_env)
    assert again["revision"] == image["revision"]
    assert json.loads(podman(podman_env, "image", "inspect", again["image"]))[0]["Id"] == inspected["Id"]
    port = free_port()
    name = f"hello-{port}"
    podman(podman_env, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "--read-only",
           "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", image["image"], "hello")
    try:
        wait_ok(f"http://127.0.0.1:{port}/readyz", container=(podman_env, name))
        echo = httpx.post(f"http://127.0.0.1:{port}/v1/echo", json={"text": "hi"}, timeout=10)
        assert echo.status_code == 200 and echo.json() == {"text": "hi", "length": 2}
        assert host_uid(podman_env, name) == UID
        # the spec's settings reached the replica (lichen serve NAME reads lichen.yaml)
        assert 'lichen_max_concurrency{endpoint="/v1/echo"} 16.0' in httpx.get(
            f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        podman(podman_env, "rm", "-f", "-t", "0", name, check=False)


def _seed_state(env: dict[str, str], volume: str, tmp_path: Path) -> None:
    """A trained, promoted model in the volume the chart's PVC names, owned by the pods' user."""
    if str(RECSYS) not in sys.path:
        sys.path.insert(0, str(RECSYS))
    from recsys import datasets
    from recsys.interactions import IdMap, interaction_matrix
    from recsys.models import EASE
    from recsys.synthesizing import synthesize

    from lichen import ModelRegistry

    state = tmp_path / "state"
    data = synthesize(n_users=120, n_items=90, mean_per_user=25, seed=3)
    items = {int(i): {"title": f"Movie {i} (1995)", "genres": ["Drama"], "year": 1995} for i in set(data.items.tolist())}
    manifest = datasets.write_dataset(state / "datasets", data, items=items)
    users, item_map = IdMap.of(data.users), IdMap.of(data.items)
    EASE(l2=50.0).fit(interaction_matrix(data, users, item_map), users, item_map).save(tmp_path / "ease")
    registry = ModelRegistry(state / "models")
    registry.register("recommender", tmp_path / "ease", params={}, metrics={}, dataset_version=manifest["version"])
    registry.promote("recommender", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = UID
            info.uname = info.gname = ""
            return info
        for child in sorted(state.iterdir()):
            tar.add(child, arcname=child.name, filter=owned)
    (tmp_path / "state.tar").write_bytes(buffer.getvalue())
    podman(env, "volume", "rm", "-f", volume, check=False)
    podman(env, "volume", "create", volume)
    podman(env, "volume", "import", volume, str(tmp_path / "state.tar"))


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory, podman_env: dict[str, str]) -> Iterator[dict[str, int]]:
    tmp_path = tmp_path_factory.mktemp("kube")
    image = build(RECSYS, "recsys", podman_env)
    out = tmp_path / "manifests"
    done = subprocess.run([LICHEN, "render", "kubernetes", str(RECSYS), "--tag", image["revision"], "--out",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    deployments = [doc for path in sorted(out.glob("service-*.yaml")) + [out / "gateway.yaml"]
                   for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "Deployment"]
    assert sorted(d["metadata"]["name"] for d in deployments) == ["recsys-events", "recsys-gateway",
                                                                 "recsys-recommender", "recsys-similar"]
    config_maps = [doc for doc in yaml.safe_load_all((out / "gateway.yaml").read_text())
                   if doc and doc["kind"] == "ConfigMap"]
    ports = {}
    for deployment in deployments:
        deployment["spec"]["replicas"] = 1
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"recsys:{image['revision']}"  # resolved to the local localhost/recsys
        ports[container["name"]] = free_port()
        container["ports"][0].update(hostPort=ports[container["name"]], hostIP="127.0.0.1")
    claim = deployments[0]["spec"]["template"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"]
    _seed_state(podman_env, claim, tmp_path)
    play = tmp_path / "play.yaml"
    play.write_text(yaml.safe_dump_all([*config_maps, *deployments], sort_keys=False))
    podman(podman_env, "kube", "play", str(play), timeout=300)
    try:
        yield ports
    finally:
        podman(podman_env, "kube", "down", str(play), check=False, timeout=120)
        podman(podman_env, "volume", "rm", "-f", claim, check=False)


def test_kube_play_runs_the_rendered_recommender_and_it_answers_a_recommendation(
        played: dict[str, int], podman_env: dict[str, str]) -> None:
    # the gateway runs from the image with its ConfigMap mounted (its upstreams are Services, which podman lacks)
    gateway = f"http://127.0.0.1:{played.pop('gateway')}"
    wait_ok(f"{gateway}/-/healthz", within_s=120)
    routes = httpx.get(f"{gateway}/-/routes", timeout=5).json()
    assert "/v1/recommendations" in json.dumps(routes)
    for service, port in played.items():
        wait_ok(f"http://127.0.0.1:{port}/readyz", within_s=120)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, service
    base = f"http://127.0.0.1:{played['recommender']}"
    answer = httpx.get(f"{base}/v1/recommendations/5", params={"k": 5}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == 1 and len(body["items"]) == 5
    similar = httpx.get(f"http://127.0.0.1:{played['similar']}/v1/items/{body['items'][0]['item_id']}/similar",
                        params={"k": 3}, timeout=10)
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    containers = json.loads(podman(podman_env, "ps", "--format", "json"))
    recommender = next(c for c in containers if c["Names"][0].startswith("recsys-recommender-pod")
                       and "recsys:" in c["Image"])
    assert host_uid(podman_env, recommender["Names"][0]) == UID
    inspected = json.loads(podman(podman_env, "inspect", recommender["Names"][0]))[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["CapDrop"] and not inspected["HostConfig"]["CapAdd"]
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env["LICHEN_SERVICE"] == "recommender" and env["LICHEN_TIMEOUT_S"] == "2"
    assert env["LICHEN_REPLICA"].startswith("recsys-recommender")
