"""Precomputed candidates for heavy users: always the answer full scoring gives, and mostly without scoring."""

from __future__ import annotations

import numpy as np
import pytest

import recsys.models.recommenders as recommenders
from recsys.interactions import IdMap, interaction_matrix
from recsys.models import load_model, make_model
from recsys.models.candidates import SCORING_BUDGET, Candidates, min_history_for, pick
from recsys.synthesizing import synthesize

PARAMS = {"ease": {"l2": 50.0}, "itemknn": {"k": 20, "shrink": 0.0}}


@pytest.fixture(scope="module")
def data():
    interactions = synthesize(300, 400, seed=1)
    users, items = IdMap.of(interactions.users), IdMap.of(interactions.items)
    return interaction_matrix(interactions, users, items), users, items


@pytest.fixture
def picks(monkeypatch):
    """Counts how often the candidates certified an answer and how often the model fell back to scoring."""
    counts = {"certified": 0, "scored": 0}

    def counting_pick(*args, **kwargs):
        picked = pick(*args, **kwargs)
        counts["certified" if picked is not None else "scored"] += 1
        return picked

    monkeypatch.setattr(recommenders, "pick", counting_pick)
    return counts


def _fitted(kind, data, *, min_history=30, count=40):
    matrix, users, items = data
    model = make_model(kind, **PARAMS[kind]).fit(matrix, users, items)
    assert model.precompute_candidates(min_history=min_history, count=count) > 0
    return model


def _same(got, want):
    assert [item for item, _ in got] == [item for item, _ in want]
    assert np.allclose([score for _, score in got], [score for _, score in want], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_candidates_give_exactly_what_scoring_the_history_gives(kind, data, picks):
    model = _fitted(kind, data)
    _matrix, users, items = data
    heavy = users.ids[model.candidates.rows]
    light = np.setdiff1d(users.ids, heavy)
    assert len(light) > 0, "some users stay below min_history and are always scored"
    rng = np.random.default_rng(0)
    for user_id in [*heavy.tolist(), *light[:20].tolist()]:
        recent = rng.choice(items.ids, int(rng.integers(0, 4))).tolist()
        exclude = set(rng.choice(items.ids, int(rng.integers(0, 10))).tolist()) or None
        k = int(rng.integers(1, 30))
        keep = (lambda item: item % 3 != 0) if rng.random() < 0.3 else None
        got = model.recommend_user(int(user_id), recent, k, exclude, keep)
        want = model.recommend(model.history(int(user_id)) + recent, k, exclude, keep)
        assert len(got) == k
        _same(got, want)
    # the point: heavy users are answered from their candidates, without scoring their history; even with
    # this mix of new events, exclusions, filters and k up to 30 of 40 candidates, most are
    assert picks["certified"] >= 0.5 * len(heavy), picks
    before = picks["certified"]
    for user_id in heavy.tolist():  # no new events and k within the candidates: always certified
        _same(model.recommend_user(int(user_id), [], 10), model.recommend(model.history(int(user_id)), 10))
    assert picks["certified"] - before == len(heavy)


def test_a_filter_the_candidates_cannot_satisfy_falls_back_to_scoring(data, picks):
    model = _fitted("ease", data)
    _matrix, users, items = data
    row = int(model.candidates.rows[0])
    outside = set(items.ids.tolist()) - set(items.ids[model.candidates.items[0]].tolist())
    got = model.recommend_user(int(users.ids[row]), [], 10, None, outside.__contains__)
    want = model.recommend(model.history(int(users.ids[row])), 10, None, outside.__contains__)
    _same(got, want)
    assert got and all(item in outside for item, _ in got)
    assert picks == {"certified": 0, "scored": 1}


def test_new_events_that_lift_an_item_past_the_bound_force_scoring():
    # two candidates and a bound of 1.0; a new event adds 5.0 to a non-candidate (index 3): it may now win
    candidates = Candidates(rows=np.array([0]), items=np.array([[0, 1]], np.int32),
                            scores=np.array([[3.0, 2.0]], np.float32), bounds=np.array([1.0], np.float32))
    ids = np.array([10, 11, 12, 13, 14])
    common = {"seen": np.array([2]), "banned": None, "filter_fn": None, "item_ids": ids}
    assert pick(candidates, 0, 2, fresh=np.zeros(0, np.int64), delta=None, **common) == [(10, 3.0), (11, 2.0)]
    lifted = np.array([0.0, 0.0, 0.0, 5.0, 0.0])
    assert pick(candidates, 0, 2, fresh=np.array([4]), delta=lifted, **common) is None
    # the same change on a candidate only reorders the candidates: still certified
    reordered = np.array([0.0, 5.0, 0.0, 0.0, 0.0])
    assert pick(candidates, 0, 2, fresh=np.array([4]), delta=reordered, **common) == [(11, 7.0), (10, 3.0)]
    # k beyond the candidates left: an unseen item outside them might be next
    assert pick(candidates, 0, 3, fresh=np.zeros(0, np.int64), delta=None, **common) is None


def test_a_user_with_fewer_unseen_items_than_candidates_needs_no_bound(picks):
    interactions = synthesize(40, 30, seed=2)
    users, items = IdMap.of(interactions.users), IdMap.of(interactions.items)
    model = make_model("ease", l2=10.0).fit(interaction_matrix(interactions, users, items), users, items)
    assert model.precompute_candidates(min_history=5, count=64) > 0
    assert np.all(model.candidates.bounds == -np.inf)  # every unseen item is a candidate
    user_id = int(users.ids[model.candidates.rows[0]])
    got = model.recommend_user(user_id, [], 100, None, None)
    _same(got, model.recommend(model.history(user_id), 100))
    assert len(got) == len(items) - len(model.history(user_id))
    assert picks == {"certified": 1, "scored": 0}


def test_candidates_survive_save_and_load_and_older_artifacts_still_serve(data, tmp_path, picks):
    model = _fitted("ease", data)
    loaded = load_model(model.save(tmp_path / "ease"))
    assert loaded.candidates is not None
    for name, array in model.candidates.arrays().items():
        np.testing.assert_array_equal(getattr(loaded.candidates, name), array)
    user_id = int(data[1].ids[model.candidates.rows[0]])
    _same(loaded.recommend_user(user_id, [], 10), model.recommend(model.history(user_id), 10))
    assert picks["certified"] == 1
    (tmp_path / "ease" / "candidates.npz").unlink()  # an artifact from before candidates existed
    older = load_model(tmp_path / "ease")
    assert older.candidates is None
    _same(older.recommend_user(user_id, [], 10), model.recommend(model.history(user_id), 10))


def test_models_not_linear_in_the_history_keep_no_candidates(data):
    matrix, users, items = data
    als = make_model("als", factors=8, regularization=1.0, alpha=3.0, iterations=3).fit(matrix, users, items)
    assert als.precompute_candidates(min_history=0) == 0 and als.candidates is None
    ease = make_model("ease", l2=50.0).fit(matrix, users, items)
    assert ease.precompute_candidates(min_history=-1) == 0 and ease.candidates is None


def test_by_default_only_histories_whose_scoring_reads_more_than_the_budget_get_candidates(data):
    assert min_history_for(27_278) == SCORING_BUDGET // 27_278 == 73  # ML-20M's catalogue: about half its users
    assert min_history_for(1_682) == 1_189  # ML-100K's: nobody (its longest history has 737 items)
    matrix, users, items = data
    model = make_model("ease", l2=50.0).fit(matrix, users, items)
    assert model.precompute_candidates() == 0 and model.candidates is None  # 400 items: above 5,000 items
    assert model.precompute_candidates(min_history=0) == len(users)
