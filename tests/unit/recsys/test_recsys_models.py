"""Models, the RecBole split and metrics: small synthetic data, fast."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluating import evaluate_kind, make_split, ranking_metrics, top_k
from recsys.interactions import IdMap, interaction_matrix
from recsys.models import MODEL_KINDS, load_model, make_model
from recsys.splits import split_by_user, split_counts

SMALL_GRIDS = {
    "kernel": [{"l2": 4.0, "power": 1.0}, {"l2": 2.0, "power": 2.0}],
    "ease": [{"l2": 10.0}, {"l2": 100.0}],
    "als": [{"factors": 8, "regularization": 1.0, "alpha": 3.0, "iterations": 5}],
    "itemknn": [{"k": 20, "shrink": 0.0}],
    "pop": [{}],
}


@pytest.fixture(scope="module")
def fitted(small_data):
    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    matrix = interaction_matrix(small_data, users, items)
    return {kind: make_model(kind, **SMALL_GRIDS[kind][0]).fit(matrix, users, items) for kind in MODEL_KINDS}


@pytest.mark.parametrize(("total", "expected"), [(10, [8, 1, 1]), (20, [16, 2, 2]), (5, [3, 1, 1]),
                                                 (2, [1, 0, 1]), (1, [1, 0, 0]), (37, [31, 3, 3])])
def test_split_counts_follow_recbole(total, expected):
    # RecBole: every part but the first rounds down; a part with 0 < share < 1 gets one
    # while the first still has more than one (37 → 3 + 3, the first takes the other 31).
    counts = split_counts(total, (0.8, 0.1, 0.1))
    assert counts == expected and sum(counts) == total


def test_split_by_user_is_seeded_disjoint_and_per_user(small_data):
    train, valid, test = split_by_user(small_data, seed=3)
    again = split_by_user(small_data, seed=3)
    other = split_by_user(small_data, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again))
    assert not np.array_equal(test, other[2])
    everything = np.concatenate([train, valid, test])
    assert len(everything) == len(small_data) == len(np.unique(everything))
    for user in np.unique(small_data.users)[:20]:
        n = int((small_data.users == user).sum())
        got = [int((small_data.users[p] == user).sum()) for p in (train, valid, test)]
        assert got == split_counts(n, (0.8, 0.1, 0.1))


def test_ranking_metrics_match_hand_computed_values():
    # user 0: truth {1, 5}; top = [5, 2, 1] → hits at ranks 1 and 3.
    # user 1: truth {7};    top = [0, 3, 4] → no hit.  user 2: no truth → not counted.
    top = np.array([[5, 2, 1], [0, 3, 4], [1, 2, 3]])
    truth = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 5, 7])), shape=(3, 8))
    got = ranking_metrics(top, truth, k=3)
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3)
    assert got["users"] == 2
    assert got["recall"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["ndcg"] == pytest.approx((dcg / idcg + 0.0) / 2)
    assert got["mrr"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["hit"] == pytest.approx(0.5)


def test_ranking_metrics_ideal_dcg_is_capped_at_k():
    top = np.array([[0, 1]])
    truth = sp.csr_matrix(np.array([[1, 1, 1, 1]]))
    got = ranking_metrics(top, truth, k=2)
    assert got["ndcg"] == pytest.approx(1.0) and got["recall"] == pytest.approx(0.5)


def test_top_k_never_returns_excluded_items(fitted, small_data):
    split = make_split(small_data, 0)
    top = top_k(fitted["ease"], split.train, split.train, k=10)
    seen = split.train.tolil().rows
    assert all(not set(row) & set(seen[u]) for u, row in enumerate(top.tolist()))


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_recommend_excludes_history_exclusions_and_filtered_items(fitted, kind):
    model = fitted[kind]
    user = model.known_users[0]
    history = model.history(user)
    assert history
    recs = model.recommend(history, 10)
    assert len(recs) == 10 and not {i for i, _ in recs} & set(history)
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    banned = {recs[0][0], recs[1][0]}
    again = model.recommend(history, 10, exclude=banned)
    assert not {i for i, _ in again} & banned
    even = model.recommend(history, 5, filter_fn=lambda item: item % 2 == 0)
    assert len(even) == 5 and all(item % 2 == 0 for item, _ in even)
    assert model.recommend([10**9], 3) and model.recommend([], 3) is not None  # unknown ids are ignored
    assert model.history(10**9) == []


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_serving_scores_equal_the_batch_scores(fitted, kind):
    """The one-user serving path (score_history) ranks exactly as the batch path used in evaluation."""
    model = fitted[kind]
    for user in model.known_users[:5]:
        seen = np.unique(model.items.index(np.asarray(model.history(user), np.int64)))
        row = sp.csr_matrix((np.ones(len(seen), np.float32), (np.zeros(len(seen), np.int64), seen)),
                            shape=(1, len(model.items)))
        batch = np.asarray(model.score_matrix(row), dtype=np.float64)[0]
        np.testing.assert_allclose(model.score_history(seen), batch, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_artifacts_round_trip(fitted, kind, tmp_path):
    model = fitted[kind]
    model.save(tmp_path / kind)
    loaded = load_model(tmp_path / kind)
    assert type(loaded) is type(model) and loaded.params == model.params
    assert loaded.known_items == model.known_items and loaded.known_users == model.known_users
    user = model.known_users[3]
    assert loaded.history(user) == model.history(user)
    expected = model.recommend(model.history(user), 10)
    got = loaded.recommend(loaded.history(user), 10)
    assert [i for i, _ in got] == [i for i, _ in expected]
    item = model.known_items[0]
    assert [i for i, _ in loaded.similar(item, 5)] == [i for i, _ in model.similar(item, 5)]
    assert item not in {i for i, _ in loaded.similar(item, 5)} and loaded.similar(10**9, 5) == []


def test_load_model_rejects_a_directory_that_is_not_an_artifact(tmp_path):
    from lichen import DataError

    with pytest.raises(DataError, match="model.json is missing"):
        load_model(tmp_path)


def test_collaborative_models_beat_popularity_on_structured_data(small_data):
    split = make_split(small_data, 0)
    ndcg = {kind: evaluate_kind(kind, split, grid=SMALL_GRIDS[kind])["test"]["ndcg"]
            for kind in ("kernel", "ease", "itemknn", "pop")}
    assert ndcg["ease"] > ndcg["pop"] and ndcg["itemknn"] > ndcg["pop"] and ndcg["kernel"] > ndcg["pop"]


def test_tuning_picks_the_grid_point_with_the_best_validation_ndcg(small_data):
    from recsys.evaluating import tune

    split = make_split(small_data, 1)
    best, valid, trials = tune("ease", split, [{"l2": 1.0}, {"l2": 30.0}, {"l2": 3000.0}])
    assert len(trials) == 3
    assert valid["ndcg"] == max(t["valid"]["ndcg"] for t in trials)
    assert best == next(t["params"] for t in trials if t["valid"]["ndcg"] == valid["ndcg"])


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_the_loop_free_top_k_equals_the_filtered_path(fitted, kind):
    model = fitted[kind]
    for user in model.known_users[:20]:
        history = model.history(user)
        plain = model.recommend(history, 10)  # argpartition + sort, no Python loop
        filtered = model.recommend(history, 10, filter_fn=lambda item: True)  # the loop that filters
        assert plain == filtered and len(plain) == 10
        assert all(isinstance(item, int) and isinstance(score, float) for item, score in plain)
        assert not set(item for item, _ in plain) & set(history)
    tiny = model.recommend(model.known_items[:-3], 10)  # fewer unseen items than k: only those
    assert sorted(item for item, _ in tiny) == sorted(model.known_items[-3:])
