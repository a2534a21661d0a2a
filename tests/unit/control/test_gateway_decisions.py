"""Rate limiting, retry budgets and backoff, admission and routing decisions, on a fake clock."""

from __future__ import annotations

import pytest

from lichen.control.admission import admission_decision, retry_after_header_s
from lichen.control.rate_limiting import default_burst, take_token
from lichen.control.retry_budgets import (
    RetryBudget,
    backoff_s,
    can_retry,
    is_idempotent,
    note_request,
    note_retry,
    should_retry,
)
from lichen.control.routing import RouteRule, match_route, order_rules, prefix_matches, rewrite_path


def test_token_bucket_allows_burst_then_refuses_then_refills() -> None:
    bucket = None
    allowed = 0
    for _ in range(10):
        decision = take_token(bucket, 0.0, rate_per_s=2.0, burst=3.0)
        bucket = decision.bucket
        allowed += decision.allowed
    assert allowed == 3
    refused = take_token(bucket, 0.0, 2.0, 3.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    assert take_token(bucket, 0.5, 2.0, 3.0).allowed
    full = take_token(bucket, 100.0, 2.0, 3.0)
    assert full.allowed and full.bucket.tokens == pytest.approx(2.0)  # capped at burst, minus the one taken


def test_default_burst() -> None:
    assert default_burst(5.0, None) == 5.0
    assert default_burst(0.2, None) == 1.0
    assert default_burst(5.0, 20) == 20.0


def test_retry_budget_caps_retries_at_the_ratio() -> None:
    budget = RetryBudget()
    for i in range(1000):
        budget = note_request(budget, i * 0.01)
    now = 10.0
    retries = 0
    while can_retry(budget, now, ratio=0.2, min_retries_per_s=0.0) and retries < 10_000:
        budget = note_retry(budget, now)
        retries += 1
    requests = budget.requests
    assert 0.19 * requests <= retries <= 0.21 * requests + 1


def test_retry_budget_floor_lets_a_quiet_service_retry() -> None:
    assert can_retry(RetryBudget(), 0.0, ratio=0.2, min_retries_per_s=1.0)
    assert not can_retry(RetryBudget(), 0.0, ratio=0.2, min_retries_per_s=0.0)


def test_budget_decays_with_time() -> None:
    budget = RetryBudget()
    for _ in range(100):
        budget = note_retry(budget, 0.0)
    assert not can_retry(budget, 0.0, 0.2, 1.0)
    assert can_retry(budget, 60.0, 0.2, 1.0)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert backoff_s(1, 10, 250, 1.0) == pytest.approx(0.010)
    assert backoff_s(3, 10, 250, 1.0) == pytest.approx(0.040)
    assert backoff_s(10, 10, 250, 1.0) == pytest.approx(0.250)
    assert backoff_s(3, 10, 250, 0.5) == pytest.approx(0.020)
    assert backoff_s(3, 10, 250, 0.0) == 0.0


def test_idempotency() -> None:
    assert is_idempotent("GET", "/x", ())
    assert is_idempotent("PUT", "/x", ())
    assert not is_idempotent("POST", "/v1/pay", ())
    assert is_idempotent("POST", "/v1/recommend", {"/v1/recommend"})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"connect_failed": True, "idempotent": False}, True),
        ({"status": 503}, True),
        ({"status": 500}, False),
        ({"status": 502}, True),
        ({"status": 504}, False),  # the replica's own endpoint timeout: the handler may still run
        ({"status": None}, True),  # reset before any response byte
        ({"status": 503, "idempotent": False}, False),
        ({"status": 503, "response_started": True}, False),
        ({"status": 503, "body_replayable": False}, False),
        ({"connect_failed": True, "attempt": 3}, False),
    ],
)
def test_should_retry(kwargs: dict, expected: bool) -> None:
    base = {"attempt": 1, "max_attempts": 3, "idempotent": True, "connect_failed": False, "status": None,
            "response_started": False, "body_replayable": True}
    assert should_retry(**{**base, **kwargs}) is expected


def test_admission() -> None:
    assert admission_decision(3, None, 0, 0) == "admit"
    assert admission_decision(3, 4, 0, 2) == "admit"
    assert admission_decision(4, 4, 1, 2) == "queue"
    assert admission_decision(4, 4, 2, 2) == "shed"
    assert admission_decision(4, 4, 0, 0) == "shed"
    assert retry_after_header_s(0.5, 0, 4) == 1
    assert retry_after_header_s(2.0, 8, 4) == 6


def test_prefix_matching_respects_segments() -> None:
    assert prefix_matches("/api", "/api") and prefix_matches("/api", "/api/x") and prefix_matches("/api", "/api?q=1")
    assert not prefix_matches("/api", "/apix")
    assert prefix_matches("/", "/anything") and prefix_matches("/api/", "/api/x")


def test_longest_prefix_then_host_then_headers_win() -> None:
    rules = order_rules([
        RouteRule("/", "web"),
        RouteRule("/v1", "api"),
        RouteRule("/v1/recommend", "recs"),
        RouteRule("/v1/recommend", "recs-beta", headers={"X-Beta": "1"}),
        RouteRule("/v1", "admin", host="admin.example"),
    ])
    assert match_route(rules, None, "/v1/recommend/42", {}).service == "recs"
    assert match_route(rules, None, "/v1/recommend", {"x-beta": "1"}).service == "recs-beta"
    assert match_route(rules, "ADMIN.example:8080", "/v1/users", {}).service == "admin"
    assert match_route(rules, "other", "/v1/users", {}).service == "api"
    assert match_route(rules, None, "/static/x", {}).service == "web"
    assert match_route(order_rules([RouteRule("/v1", "api")]), None, "/v2", {}) is None


def test_strip_prefix() -> None:
    rule = RouteRule("/recs", "recs", strip_prefix=True)
    assert rewrite_path(rule, "/recs/v1/x") == "/v1/x"
    assert rewrite_path(rule, "/recs") == "/"
    assert rewrite_path(RouteRule("/recs", "recs"), "/recs/x") == "/recs/x"
