"""Gateway config rendering and loading, the API key store and cache, JWT verification, metric names."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.errors import ConfigError
from lichen.gateway.authenticating import Authenticator, credential_of
from lichen.gateway.configs import Endpoint, GatewayConfig, load_config, render_config, write_config
from lichen.gateway.keys import KeyCache, KeyStore, split_token
from lichen.gateway.metrics import GatewayMetrics
from lichen.spec.models import AppSpec, AuthSpec, JwtSpec

ROOT = Path(__file__).resolve().parents[3]


def spec() -> AppSpec:
    return AppSpec.model_validate({
        "app": "shop",
        "services": {
            "recs": {"entrypoint": "recs.app:Recs", "routes": ["/v1/recommend", {"prefix": "/v1/similar", "timeout_s": "2s"}],
                     "max_inflight": 8, "timeout_s": "5s"},
            "search": {"entrypoint": "search.app:Search"},
        },
        "gateway": {"port": 9000, "balancer": "hash", "hash_on": "header:X-User-ID"},
    })


def test_render_config_from_spec_and_endpoints(tmp_path: Path) -> None:
    endpoints = {"recs": [Endpoint(url="http://127.0.0.1:9101", replica="recs-0", revision="abc"),
                          Endpoint(url="http://127.0.0.1:9102", replica="recs-1", revision="def", ready=False)]}
    config = render_config(spec(), endpoints, weights={"recs": {"abc": 90, "def": 10}},
                           idempotent_paths={"recs": ["/v1/recommend"]})
    assert config.port == 9000 and config.settings.balancer == "hash"
    routes = {(r.prefix, r.service): r for r in config.routes}
    assert set(routes) == {("/v1/recommend", "recs"), ("/v1/similar", "recs"), ("/search", "search")}
    assert routes[("/v1/similar", "recs")].timeout_s == 2.0
    assert routes[("/search", "search")].strip_prefix  # a service without routes gets /<name>, stripped
    recs = config.services["recs"]
    assert recs.max_inflight == 8 and recs.timeout_s == 5.0 and recs.revision_weights == {"abc": 90, "def": 10}
    assert [e.ready for e in recs.endpoints] == [True, False] and recs.idempotent_paths == ["/v1/recommend"]
    assert config.services["search"].endpoints == []
    path = tmp_path / "deep" / "gateway.json"
    write_config(config, path)
    assert load_config(path) == config
    assert not list(path.parent.glob("*.tmp"))

    class RegistryEntry:  # the shape of lichen.runtime's endpoint registry entries
        url, replica, revision = "http://127.0.0.1:9200", "search-0", "r9"

    rendered = render_config(spec(), {"search": [RegistryEntry(), {"url": "http://127.0.0.1:9201"}]})
    assert [(e.url, e.replica, e.revision) for e in rendered.services["search"].endpoints] == [
        ("http://127.0.0.1:9200", "search-0", "r9"), ("http://127.0.0.1:9201", "", "default")]


def test_load_config_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="gateway.json: not valid JSON"):
        load_config(path)
    path.write_text(json.dumps({"routes": [{"prefix": "api", "service": "x"}], "services": {"x": {}}}))
    with pytest.raises(ConfigError, match=r"routes\.0\.prefix"):
        load_config(path)
    path.write_text(json.dumps({"routes": [{"prefix": "/api", "service": "ghost"}]}))
    with pytest.raises(ConfigError, match="ghost"):
        load_config(path)
    yaml_path = tmp_path / "gateway.yaml"
    yaml_path.write_text("port: 8081\nroutes:\n  - {prefix: /, service: web}\nservices:\n  web:\n    endpoints:\n"
                         "      - {url: 'http://10.0.0.5:80'}\n")
    loaded = load_config(yaml_path)
    assert loaded.port == 8081 and loaded.services["web"].endpoints[0].host_port == ("10.0.0.5", 80)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ValueError):
        GatewayConfig.model_validate({"routes": [{"prefix": "/a", "service": "x"}, {"prefix": "/a", "service": "y"}]})


def test_key_store_hashes_scopes_expires_and_revokes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, token = store.create("app", ["/v1"], expires_at=None)
    key_id, secret = split_token(token)
    assert key_id == key.id and secret.encode() not in (tmp_path / "keys.db").read_bytes()
    cache = KeyCache(tmp_path / "keys.db")
    assert cache.refresh() and not cache.refresh()  # loads once, then only on change
    now = time.time()
    assert cache.verify(token, "/v1/x", now)[1] == "ok"
    assert cache.verify(token, "/v2/x", now)[1] == "out_of_scope"
    assert cache.verify(token[:-1] + ("A" if token[-1] != "A" else "B"), "/v1", now)[1] == "invalid_key"
    assert cache.verify("lk_", "/v1", now)[1] == "invalid_key"
    assert cache.verify("garbage", "/v1", now)[1] == "invalid_key"
    short, short_token = store.create("temp", ["*"], expires_at=now + 10)
    store.revoke(key.id)
    wait_for_refresh(cache)
    assert cache.verify(token, "/v1/x", now)[1] == "revoked_key"
    assert cache.verify(short_token, "/anything", now)[1] == "ok"
    assert cache.verify(short_token, "/anything", now + 11)[1] == "expired_key"
    assert "secret_sha256" not in short.public() and short.public()["state"] == "active"
    with pytest.raises(ConfigError):
        store.revoke("nope")
    with pytest.raises(ConfigError):
        store.create("bad", ["v1"], None)


def wait_for_refresh(cache: KeyCache) -> None:
    # mtime granularity can hide a change made within the same tick; size changes with every write here
    assert cache.refresh()


def test_authenticator_with_hs256_and_rs256_jwks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    keys = KeyCache(tmp_path / "none.db")
    hs = Authenticator(AuthSpec(jwt=JwtSpec(algorithm="HS256", secret_env="JWT_SECRET", audience="shop")), keys, tmp_path)
    now = time.time()
    good = jwt.encode({"sub": "u1", "aud": "shop", "exp": int(now) + 60}, "s" * 40, algorithm="HS256")
    assert hs.check(good, "/x", now).principal == "jwt:u1"
    assert hs.check(good, "/x", now + 120).reason == "expired_jwt"  # cached verdicts still expire
    wrong_aud = jwt.encode({"sub": "u1", "aud": "other", "exp": int(now) + 60}, "s" * 40, algorithm="HS256")
    assert hs.check(wrong_aud, "/x", now).status == 401
    assert hs.check(None, "/x", now).reason == "missing_credentials"

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    rs = Authenticator(AuthSpec(jwt=JwtSpec(algorithm="RS256", jwks_file="jwks.json", issuer="idp")), keys, tmp_path)
    token = jwt.encode({"sub": "u2", "iss": "idp", "exp": int(now) + 60}, private, algorithm="RS256", headers={"kid": "k1"})
    assert rs.check(token, "/x", now).principal == "jwt:u2"
    forged = jwt.encode({"sub": "u2", "iss": "idp"}, "s" * 40, algorithm="HS256", headers={"kid": "k1"})
    assert rs.check(forged, "/x", now).status == 401
    monkeypatch.delenv("JWT_SECRET")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Authenticator(AuthSpec(jwt=JwtSpec(algorithm="HS256", secret_env="JWT_SECRET")), keys, tmp_path)
    assert credential_of("Bearer abc", None) == "abc" and credential_of(None, " k ") == "k"
    assert credential_of("Basic xyz", None) is None


def test_metric_names_match_the_contract_in_docs_metrics_md() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    section = doc.split("## Gateway", 1)[1].split("##", 1)[0]
    documented = {}
    for name, labels in re.findall(r"\| `(lichen_gateway_\w+|lichen_cold_start_seconds)` \| \w+ \| ([^|]*)\|", section):
        documented[name] = sorted(re.findall(r"`(\w+)`", labels.split("(")[0]))
    exposed = {}
    for family in GatewayMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = sorted(family.samples[0].labels) if family.samples else None
        exposed[name] = labels
    assert set(documented) == set(exposed)
    metrics = GatewayMetrics()
    metrics.observe_request("/v1", "recs", "abc", 200, 0.01)
    metrics.attempt("recs", "abc", "ok")
    metrics.rate_limit("ip")
    metrics.set_held("recs", 3)
    metrics.activation("recs", "released")
    metrics.observe_cold_start("recs", 0.6)
    text = metrics.exposition().decode()
    assert 'lichen_gateway_held_requests{service="recs"} 3.0' in text
    assert 'lichen_cold_start_seconds_bucket{le="0.5",service="recs"} 0.0' in text
    assert 'lichen_cold_start_seconds_bucket{le="0.75",service="recs"} 1.0' in text
    assert 'lichen_gateway_activations_total{outcome="released",service="recs"} 1.0' in text
    assert 'lichen_gateway_requests_total{revision="abc",route="/v1",service="recs",status="200"} 1.0' in text
    assert 'lichen_gateway_rate_limited_total{scope="ip"} 1.0' in text
    for name, labels in documented.items():
        assert labels, name


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "k.db")
    created = runner.invoke(app, ["keys", "create", "ci", "--scope", "/v1", "--expires-in", "30d", "--db", db, "--json"])
    assert created.exit_code == 0, created.output
    data = json.loads(created.output)
    assert data["token"].startswith("lk_") and data["expires_at"] > time.time() + 29 * 86400
    listed = runner.invoke(app, ["keys", "list", "--db", db])
    assert listed.exit_code == 0 and data["id"] in listed.output and data["token"] not in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", data["id"], "--db", db, "--json"])
    assert revoked.exit_code == 0 and json.loads(revoked.output)["state"] == "revoked"
    for verb in (["gateway", "--help"], ["keys", "create", "--help"], ["keys", "list", "--help"], ["keys", "revoke", "--help"]):
        result = runner.invoke(app, verb)
        assert result.exit_code == 0 and "Example: lichen" in result.output
