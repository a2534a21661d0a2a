"""W3C traceparent parsing and parent-based ratio sampling (lichen.trace_contexts), pure."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lichen.trace_contexts import TraceParent, format_traceparent, is_sampled, parse_traceparent, ratio_bound

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_header_gives_its_ids_and_flag() -> None:
    parent = parse_traceparent(VALID)
    assert parent == TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    assert parse_traceparent(VALID[:-2].encode() + b"00") == parent._replace(sampled=False)
    assert parse_traceparent(VALID[:-2] + "03").sampled  # other flag bits do not hide the sampled bit


@pytest.mark.parametrize("header", [
    None, "", "garbage", VALID.upper(), VALID.replace("00-", "ff-", 1), VALID + "-extra",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # a digit short
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # a later version adds fields after a dash only
])
def test_an_invalid_header_is_treated_as_absent(header: str | None) -> None:
    assert parse_traceparent(header) is None


def test_a_later_version_is_read_for_its_first_four_fields() -> None:
    assert parse_traceparent(VALID.replace("00-", "cc-", 1) + "-what-comes-next") == parse_traceparent(VALID)


@given(st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.booleans())
def test_format_and_parse_round_trip(trace_id: int, span_id: int, sampled: bool) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, sampled)) == TraceParent(trace_id, span_id, sampled)


def test_a_parent_decides_whatever_the_ratio() -> None:
    kept, dropped = TraceParent(5, 6, True), TraceParent(5, 6, False)
    assert is_sampled(kept, 5, ratio_bound(0.0)) and not is_sampled(dropped, 5, ratio_bound(1.0))


def test_new_traces_are_kept_by_the_same_rule_as_opentelemetry() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    rng = random.Random(7)
    for ratio in (0.0, 0.001, 0.25, 0.5, 0.999, 1.0):
        theirs = TraceIdRatioBased(ratio)
        bound = ratio_bound(ratio)
        for _ in range(300):
            trace_id = rng.getrandbits(128)
            expected = theirs.should_sample(None, trace_id, "x").decision is Decision.RECORD_AND_SAMPLE
            assert is_sampled(None, trace_id, bound) is expected
    kept = sum(is_sampled(None, rng.getrandbits(128), ratio_bound(0.25)) for _ in range(4000))
    assert 800 < kept < 1200


def test_a_ratio_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        ratio_bound(1.5)
