"""The embedded series store: appends, matchers, retention, snapshots and memory accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lichen.errors import DataError
from lichen.observe.series import STALE_NAN, LabelMatcher, SeriesStore, is_stale, stale_mask


def _fill(store: SeriesStore) -> None:
    for i in range(10):
        store.append({"__name__": "m", "svc": "a", "env": "prod"}, i * 1000, float(i))
        store.append({"__name__": "m", "svc": "abc", "env": "dev"}, i * 1000, float(10 * i))
        store.append({"__name__": "other", "svc": "a"}, i * 1000, 1.0)


def test_select_by_every_matcher_type_with_anchored_regexes() -> None:
    store = SeriesStore()
    _fill(store)

    def names(*matchers: LabelMatcher) -> list[str]:
        return sorted(dict(s.labels)["svc"] + ":" + dict(s.labels)["__name__"] for s in store.select(list(matchers), 0, 10_000))

    assert names(LabelMatcher("__name__", "=", "m")) == ["a:m", "abc:m"]
    assert names(LabelMatcher("__name__", "=", "m"), LabelMatcher("env", "!=", "prod")) == ["abc:m"]
    assert names(LabelMatcher("svc", "=~", "a")) == ["a:m", "a:other"]  # anchored: "abc" does not match
    assert names(LabelMatcher("svc", "!~", "a.*")) == []
    assert names(LabelMatcher("env", "=", "")) == ["a:other"]  # a missing label equals ""


def test_select_restricts_to_the_time_range_and_returns_arrays() -> None:
    store = SeriesStore()
    _fill(store)
    [series] = store.select([LabelMatcher("svc", "=", "abc")], 3000, 5000)
    assert series.t_ms.dtype == np.int64 and series.values.dtype == np.float64
    assert series.t_ms.tolist() == [3000, 4000, 5000]
    assert series.values.tolist() == [30.0, 40.0, 50.0]


def test_out_of_order_samples_are_dropped_and_equal_timestamps_overwrite() -> None:
    store = SeriesStore()
    labels = {"__name__": "x"}
    store.append(labels, 2000, 1.0)
    store.append(labels, 1000, 5.0)
    store.append(labels, 2000, 7.0)
    [series] = store.select([LabelMatcher("__name__", "=", "x")], 0, 10_000)
    assert series.t_ms.tolist() == [2000] and series.values.tolist() == [7.0]


def test_retention_drops_old_samples_and_memory_stays_bounded() -> None:
    store = SeriesStore(retention_s=60)
    labels = {"__name__": "x"}
    for i in range(10_000):
        store.append(labels, i * 1000, float(i))
        if i % 500 == 0:
            store.drop_expired(i * 1000)
    store.drop_expired(9_999_000)
    [series] = store.select([LabelMatcher("__name__", "=", "x")], 0, 10**9)
    assert series.t_ms[0] >= 9_999_000 - 60_000
    stats = store.stats()
    assert stats["samples"] == len(series.t_ms)
    assert stats["buffer_bytes"] <= 16 * 4 * 1024  # never more than a few times the live window


def test_bytes_per_sample_is_sixteen_when_buffers_are_full() -> None:
    store = SeriesStore()
    for s in range(10):
        for i in range(1024):
            store.append({"__name__": "x", "i": str(s)}, i, 1.0)
    assert store.stats()["bytes_per_sample"] == pytest.approx(16.0)


def test_stale_markers_are_recognised() -> None:
    assert is_stale(STALE_NAN) and not is_stale(math.nan) and not is_stale(1.0)
    arr = np.array([1.0, STALE_NAN, math.nan])
    assert stale_mask(arr).tolist() == [False, True, False]


def test_label_names_and_values() -> None:
    store = SeriesStore()
    _fill(store)
    assert store.label_names() == ["__name__", "env", "svc"]
    assert store.label_values("svc") == ["a", "abc"]
    assert store.label_values("env", [LabelMatcher("svc", "=", "abc")]) == ["dev"]


def test_snapshot_and_restore_keep_history(tmp_path) -> None:
    store = SeriesStore()
    _fill(store)
    store.mark_stale({"__name__": "other", "svc": "a"}, 20_000)
    path = tmp_path / "series.npz"
    store.snapshot(path)
    assert not (tmp_path / "series.npz.tmp").exists()
    again = SeriesStore.restore(path)
    for matchers in ([LabelMatcher("__name__", "=", "m")], [LabelMatcher("__name__", "=", "other")]):
        before = store.select(matchers, 0, 10**9)
        after = again.select(matchers, 0, 10**9)
        assert [s.labels for s in before] == [s.labels for s in after]
        for a, b in zip(before, after, strict=True):
            assert a.t_ms.tolist() == b.t_ms.tolist()
            assert a.values.view(np.int64).tolist() == b.values.view(np.int64).tolist()  # stale bits survive
    again.append({"__name__": "m", "svc": "a", "env": "prod"}, 30_000, 99.0)
    assert again.select([LabelMatcher("svc", "=", "a"), LabelMatcher("__name__", "=", "m")], 30_000, 30_000)[0].values.tolist() == [99.0]


def test_restore_of_a_missing_file_is_empty_and_a_corrupt_one_is_a_state_error(tmp_path) -> None:
    from lichen.errors import StateError

    assert SeriesStore.restore(tmp_path / "none.npz").stats()["series"] == 0
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a snapshot")
    with pytest.raises(StateError, match="bad.npz"):
        SeriesStore.restore(bad)


def test_max_series_bounds_the_index() -> None:
    store = SeriesStore(max_series=3)
    for i in range(5):
        store.append({"__name__": "x", "i": str(i)}, 0, 1.0)
    assert store.stats()["series"] == 3 and store.stats()["dropped_series"] == 2


def test_invalid_regex_is_a_data_error() -> None:
    with pytest.raises(DataError, match="invalid regex"):
        LabelMatcher("a", "=~", "(")


def test_series_without_samples_leave_the_index_after_retention() -> None:
    store = SeriesStore(retention_s=60, max_series=100)
    for i in range(100):  # a hundred short-lived replicas
        store.append({"__name__": "up", "replica": f"r{i}"}, i * 1000, 1.0)
    store.append({"__name__": "up", "replica": "late"}, 500_000, 1.0)  # dropped: the index is full
    assert store.stats()["dropped_series"] == 1
    store.drop_expired(500_000)
    store.append({"__name__": "up", "replica": "late"}, 500_000, 1.0)
    assert store.label_values("replica") == ["late"]
    assert [dict(s.labels)["replica"] for s in store.select([LabelMatcher("__name__", "=", "up")], 0, 10**9)] == ["late"]


def test_append_at_writes_a_whole_scrape_and_honours_the_per_series_cap() -> None:
    store = SeriesStore(max_samples_per_series=3)
    keys = [(("__name__", "x"), ("i", str(i))) for i in range(3)]
    for step in range(5):
        store.append_at(step * 1000, [(k, float(step)) for k in keys])
    data = store.select([LabelMatcher("__name__", "=", "x")], 0, 10**9)
    assert len(data) == 3 and all(s.t_ms.tolist() == [2000, 3000, 4000] for s in data)
