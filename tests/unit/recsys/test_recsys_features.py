"""The feature store: SQLite by default, a real Redis when configured."""

from __future__ import annotations

import pytest

from recsys import features as feature_store
from recsys.interactions import Interactions
from recsys.jobs import features, ingest

DATA = Interactions.from_arrays(
    users=[1, 1, 1, 2, 2, 3],
    items=[10, 11, 12, 10, 11, 10],
    ratings=[5, 4, 3, 5, 2, 1],
    timestamps=[300, 100, 200, 50, 60, 70],
)
META = {10: {"title": "Ten (1990)", "genres": ["Drama"], "year": 1990}}


def test_build_features_orders_histories_and_counts_cooccurrence():
    built = feature_store.build_features(DATA, META, "ds-test", top_n=1)
    assert built.histories == {1: [11, 12, 10], 2: [10, 11], 3: [10]}  # oldest first
    assert built.popularity == {10: 3, 11: 2, 12: 1}
    assert built.cooccurrence[10] == [(11, 2)]  # top-1 kept: 11 co-occurs with 10 for users 1 and 2
    assert built.cooccurrence[12] == [(10, 1)]


def _check_reader(reader):
    assert reader.dataset_version == "ds-test"
    assert reader.history(1) == [11, 12, 10] and reader.history(999) == []
    assert reader.item_meta(10) == {"item_id": 10, "popularity": 3, "title": "Ten (1990)", "genres": ["Drama"],
                                    "year": 1990}
    assert reader.item_meta(11)["title"] is None and reader.item_meta(999) is None
    assert reader.co_occurring(10, 5) == [(11, 2), (12, 1)]
    assert reader.popular(2) == [(10, 3), (11, 2)]


def test_sqlite_store_round_trip_and_reader_sees_a_rebuild(tmp_path):
    path = tmp_path / "features.db"
    feature_store.write_sqlite(path, feature_store.build_features(DATA, META, "ds-test"))
    reader = feature_store.FeatureReader(path, refresh_s=0.0)
    _check_reader(reader)
    newer = Interactions.from_arrays([1, 4], [10, 13], [5, 5], [1, 2])
    feature_store.write_sqlite(path, feature_store.build_features(newer, {}, "ds-newer"))
    assert reader.dataset_version == "ds-newer" and reader.history(4) == [13]
    assert [p.name for p in tmp_path.iterdir()] == ["features.db"]  # no temporaries left behind
    reader.close()


def test_missing_sqlite_store_is_a_clear_error(tmp_path):
    from lichen import DataError

    with pytest.raises(DataError, match="run the features job first"):
        feature_store.FeatureReader(tmp_path / "nope.db")


def test_redis_store_round_trip_and_version_switch(redis_url):
    import redis

    feature_store.write_redis(redis_url, feature_store.build_features(DATA, META, "ds-test"))
    reader = feature_store.FeatureReader(redis_url, refresh_s=0.0)
    _check_reader(reader)
    newer = Interactions.from_arrays([1, 4], [10, 13], [5, 5], [1, 2])
    feature_store.write_redis(redis_url, feature_store.build_features(newer, {}, "ds-newer"))
    assert reader.dataset_version == "ds-newer" and reader.history(4) == [13] and reader.history(2) == []
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match="recsys:ds-test:*"))  # the old version's keys are gone
    assert client.get("recsys:current") == b"ds-newer"
    reader.close()
    client.close()


def test_features_job_writes_sqlite_by_default_and_redis_when_configured(app_dir, redis_url, monkeypatch):
    src = app_dir / "u.data"
    src.write_text("1\t10\t5\t300\n1\t11\t4\t100\n2\t10\t3\t50\n")
    ingest(["--data", str(src)])
    assert features([]) == 0
    reader = feature_store.FeatureReader(app_dir / ".lichen" / "features.db")
    assert reader.history(1) == [11, 10] and reader.popular(1) == [(10, 2)]
    monkeypatch.setenv("REDIS_URL", redis_url)
    from recsys.jobs import features_parser

    assert features_parser().parse_args([]).redis_url == redis_url
    assert features(["--redis-url", redis_url]) == 0
    redis_reader = feature_store.FeatureReader(redis_url)
    assert redis_reader.history(1) == [11, 10] and redis_reader.dataset_version == reader.dataset_version
    assert redis_reader.co_occurring(10) == [(11, 1)]


@pytest.mark.parametrize("block", [1, 7, 10_000])
def test_cooccurrence_a_block_of_rows_at_a_time_equals_the_whole_product(monkeypatch, block):
    import numpy as np
    import scipy.sparse as sp

    from recsys import memory_budgets
    from recsys.features import top_cooccurring
    from recsys.interactions import IdMap, interaction_matrix
    from recsys.synthesizing import synthesize

    data = synthesize(200, 300, seed=4)
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    matrix = interaction_matrix(data, users, items)
    dense = (matrix.T @ matrix).toarray().astype(np.int64)
    np.fill_diagonal(dense, 0)
    expected = {}
    for row in range(dense.shape[0]):  # most co-occurring first, ties by the smaller index
        ranked = sorted((c for c in range(dense.shape[1]) if dense[row, c] > 0), key=lambda c: (-dense[row, c], c))
        if ranked:
            expected[int(items.ids[row])] = [(int(items.ids[c]), int(dense[row, c])) for c in ranked[:20]]
    monkeypatch.setattr(memory_budgets, "block_rows", lambda n: block)
    assert top_cooccurring(sp.csr_matrix(matrix), items.ids, 20) == expected
