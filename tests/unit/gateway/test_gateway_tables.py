"""The live routing tables: replica choice with ejection, panic routing, pinning, hashing, and reload carry-over."""

from __future__ import annotations

from collections import Counter

from lichen.control.outliers import OutlierState
from lichen.gateway.configs import GatewayConfig
from lichen.gateway.tables import SharedState, Tables


def config(balancer: str = "p2c", hash_on: str | None = None, urls: tuple[str, ...] = ("a", "b", "c"), **svc) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "settings": {"balancer": balancer, "hash_on": hash_on},
        "routes": [{"prefix": "/", "service": "s"}],
        "services": {"s": {"endpoints": [
            {"url": f"http://10.0.0.{i + 1}:80", "replica": name, "revision": svc.get("revisions", {}).get(name, "r1"),
             "ready": name not in svc.get("unready", ())}
            for i, name in enumerate(urls)]}},
    })


def test_ejected_and_unready_replicas_are_skipped_until_nothing_else_is_left() -> None:
    shared = SharedState()
    table = Tables(config(unready=("c",)), shared).services["s"]
    a, b = table.ready
    table.set_outlier_state(b, OutlierState(ejected_until=100.0))
    assert {table.pick(50.0, None, None, None).id for _ in range(50)} == {"a"}
    assert table.pick(50.0, None, None, [a]).id == "b"  # panic: only the ejected one is left
    assert table.pick(150.0, None, None, [a]).id == "b"  # its ejection ran out
    assert table.pick(50.0, None, None, [a, b]) is None  # the unready one is never used


def test_reload_keeps_per_replica_state_for_unchanged_urls() -> None:
    shared = SharedState()
    first = Tables(config(), shared).services["s"]
    first.ready[0].outstanding = 7
    first.ready[0].outlier = OutlierState(consecutive_failures=3)
    second = Tables(config(urls=("a", "b")), shared).services["s"]
    assert second.ready[0].outstanding == 7 and second.ready[0].outlier.consecutive_failures == 3
    assert len(shared.upstreams) == 2  # c's state and pool were dropped
    same = first.ready[0]
    third = Tables(config(urls=("a", "b"), revisions={"a": "r2"}), shared).services["s"]
    assert third.ready[0] is same and same.revision == "r2" and same.outstanding == 7  # updated in place


def test_hash_on_header_query_and_path_segment() -> None:
    table = Tables(config("hash", "path:user_id"), SharedState()).services["s"]
    assert table.hash_key([], "/v1/recommend", "user_id=42&k=3") == "42"
    assert table.hash_key([], "/v1/user_id/77/items", "") == "77"
    assert table.hash_key([], "/v1/other", "") is None
    owners = {table.pick(0.0, None, key, None).id for key in ("42",) * 20}
    assert len(owners) == 1
    spread = Counter(table.pick(0.0, None, f"user{i}", None).id for i in range(300))
    assert len(spread) == 3
    header_table = Tables(config("hash", "header:X-User-ID"), SharedState()).services["s"]
    assert header_table.hash_key([(b"x-user-id", b"u9")], "/", "") == "u9"


def test_revision_pinning_and_weights() -> None:
    cfg = config(revisions={"a": "v1", "b": "v1", "c": "v2"})
    table = Tables(cfg, SharedState()).services["s"]
    assert {table.pick(0.0, "v2", None, None).id for _ in range(20)} == {"c"}
    picks = Counter(table.pick(0.0, None, None, None).revision for _ in range(600))
    assert picks["v1"] > 200 and picks["v2"] > 200  # no weights: even over revisions
