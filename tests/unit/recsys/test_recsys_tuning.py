"""The shortcuts tuning takes, each held equal to the plain computation: EASE's validation scores
from the inverse Cholesky factor, ItemKNN's grid over one similarity per shrinkage, params chosen
by validation averaged over seeds, and (seed, model) runs kept on disk for evaluate to reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys import evaluation_runs
from recsys.evaluating import evaluate_kind, fit, make_split, ranking_metrics, top_k, tune
from recsys.models.ease import FactorScores
from recsys.training import choose_params


@pytest.mark.parametrize("l2", [0.5, 30.0, 3000.0])
def test_ease_scores_from_the_inverse_factor_equal_the_fitted_model(small_data, l2):
    split = make_split(small_data, 0)
    model = fit("ease", {"l2": l2}, split.train, split.users, split.items)
    scores = FactorScores.fit(split.train, l2)
    assert scores is not None
    expected, got = model.score_matrix(split.train), scores.score_matrix(split.train)
    unseen = split.train.toarray() == 0  # seen items are excluded from every ranking
    assert np.allclose(got[unseen], expected[unseen], rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.array_equal(top_k(scores, split.train, split.train, k=5)[:, 0],
                          top_k(model, split.train, split.train, k=5)[:, 0])


def test_ease_scores_from_the_factor_say_none_when_cholesky_fails(small_data):
    split = make_split(small_data, 0)
    assert FactorScores.fit(split.train, -1e9) is None  # not positive definite: the caller fits EASE itself


def test_itemknn_grid_over_shared_similarities_equals_fitting_each_point(small_data):
    split = make_split(small_data, 2)
    grid = [{"k": k, "shrink": s} for k in (5, 20, 60) for s in (0.0, 10.0)]
    best, valid, trials = tune("itemknn", split, grid)
    for trial in trials:  # in grid order, each the same as a model fitted on its own
        alone = fit("itemknn", trial["params"], split.train, split.users, split.items)
        assert trial["valid"] == ranking_metrics(top_k(alone, split.train, split.train), split.valid)
    assert [t["params"] for t in trials] == grid and valid == max((t["valid"] for t in trials),
                                                                key=lambda v: v["ndcg"])


def test_params_are_chosen_by_validation_averaged_over_seeds():
    def run(seed, ndcgs):
        return {"seed": seed, "grid": [{"params": {"l2": l2}, "valid_ndcg": v} for l2, v in zip((1, 2, 3), ndcgs)]}

    # seed 0 alone would pick l2=1, seed 1 alone l2=3; the mean picks l2=2
    runs = [run(0, [0.40, 0.39, 0.30]), run(1, [0.20, 0.33, 0.34])]
    assert choose_params("ease", runs) == {"l2": 2}
    assert choose_params("ease", [run(0, [0.3, 0.3, 0.1])]) == {"l2": 1}  # a tie goes to the earlier point
    with pytest.raises(ValueError, match="different grids"):
        choose_params("ease", [run(0, [0.1, 0.2, 0.3]), {"seed": 1, "grid": [{"params": {"l2": 9},
                                                                              "valid_ndcg": 0.5}]}])


def test_runs_are_reused_only_for_the_same_dataset_seed_model_and_protocol(small_data, tmp_path, monkeypatch):
    calls = []
    real = evaluation_runs._run_one
    monkeypatch.setattr(evaluation_runs, "_run_one", lambda job: calls.append(job) or real(job))
    runs = tmp_path / "runs"
    first = evaluation_runs.run_protocol(small_data, "ds-a", [(0, "pop"), (1, "pop")], cache_dir=runs)
    assert len(calls) == 2 and len(list(runs.glob("*.json"))) == 2
    seen = []
    again = evaluation_runs.run_protocol(small_data, "ds-a", [(0, "pop"), (1, "pop")], cache_dir=runs,
                                         on_done=lambda seed, kind, result, reused: seen.append(reused))
    assert len(calls) == 2 and seen == [True, True]
    assert [json.dumps(again[pair], sort_keys=True, default=str) for pair in sorted(again)] == \
        [json.dumps(first[pair], sort_keys=True, default=str) for pair in sorted(first)]
    evaluation_runs.run_protocol(small_data, "ds-b", [(0, "pop")], cache_dir=runs)  # another dataset
    evaluation_runs.run_protocol(small_data, "ds-a", [(0, "pop")], cache_dir=runs, refit=False)  # RecBole's
    evaluation_runs.run_protocol(small_data, "ds-a", [(0, "pop")], cache_dir=runs, reuse=False)  # asked not to
    assert len(calls) == 5
    key = evaluation_runs.run_key("ds-a", 0, "pop", True)
    (runs / f"{key}.json").write_text("{torn")  # a damaged file is run again, not trusted
    evaluation_runs.run_protocol(small_data, "ds-a", [(0, "pop")], cache_dir=runs)
    assert len(calls) == 6
    monkeypatch.setattr(evaluation_runs, "code_digest", lambda: "edited")  # the models' code changed
    evaluation_runs.run_protocol(small_data, "ds-a", [(1, "pop")], cache_dir=runs)
    assert len(calls) == 7


def test_a_run_records_every_grid_points_validation(small_data):
    split = make_split(small_data, 0)
    result = evaluate_kind("ease", split, grid=[{"l2": 10.0}, {"l2": 100.0}])
    assert [point["params"] for point in result["grid"]] == [{"l2": 10.0}, {"l2": 100.0}]
    assert max(point["valid_ndcg"] for point in result["grid"]) == result["valid"]["ndcg"]
    assert all(point["valid"]["ndcg"] == point["valid_ndcg"] and set(point["valid"]) == {"recall", "ndcg", "mrr", "hit"}
               for point in result["grid"])


def test_a_model_is_registered_with_its_chosen_points_validation_and_the_protocols_test():
    from recsys.training import summarise

    def run(seed, valid_ndcgs, test_ndcg):
        return {"seed": seed, "test": {"recall": 0.1, "ndcg": test_ndcg, "mrr": 0.2, "hit": 0.5},
                "grid": [{"params": {"l2": l2}, "valid_ndcg": v,
                          "valid": {"recall": v / 2, "ndcg": v, "mrr": v, "hit": v}}
                         for l2, v in zip((1, 2), valid_ndcgs)]}

    result = summarise("ease", [run(0, [0.4, 0.3], 0.5), run(1, [0.2, 0.3], 0.3)], {"l2": 2})
    assert result["valid"] == {"recall": 0.15, "ndcg": 0.3, "mrr": 0.3, "hit": 0.3}  # the chosen point's
    assert result["test"]["ndcg"] == 0.4 and result["seeds"] == [0, 1]


def test_the_promoted_configuration_is_tested_on_every_seed(small_data, monkeypatch):
    from recsys import training

    splits = [make_split(small_data, seed) for seed in (0, 1)]
    grid = [{"l2": 1.0}, {"l2": 300.0}]
    runs = [evaluate_kind("ease", split, grid=grid) for split in splits]
    params = {"l2": 300.0}
    expected = [evaluate_kind("ease", split, grid=[params])["test"] for split in splits]
    tested = training.metrics_at_params("ease", splits, runs, params)
    assert tested["ndcg"] == pytest.approx((expected[0]["ndcg"] + expected[1]["ndcg"]) / 2)
    assert tested["recall"] == pytest.approx((expected[0]["recall"] + expected[1]["recall"]) / 2)
    # a run that chose the configuration itself is not run again
    calls = []
    monkeypatch.setattr(training, "evaluate_kind", lambda *a, **k: calls.append(k["grid"]) or evaluate_kind(*a, **k))
    runs[0]["params"], runs[1]["params"] = params, {"l2": 1.0}
    training.metrics_at_params("ease", splits, runs, params)
    assert calls == [[params]]
    with pytest.raises(ValueError, match="run of seed 1 given with the split of seed 0"):
        training.metrics_at_params("ease", splits, runs[::-1], params)


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_tuning_never_holds_a_grid_points_model_while_fitting_the_next(small_data, kind, monkeypatch):
    # Each EASE point holds an n × n factor and each ItemKNN point its neighbours: if the grid's generator
    # kept the previous one while fitting the next, the peak would be twice what memory_budgets checked.
    import gc
    import weakref

    from recsys import evaluating

    alive: list[weakref.ref] = []
    held_at_fit: list[int] = []
    if kind == "ease":
        real = FactorScores.fit.__func__

        def fit_point(cls, matrix, l2):
            gc.collect()
            held_at_fit.append(sum(ref() is not None for ref in alive))
            scores = real(cls, matrix, l2)
            alive.append(weakref.ref(scores))
            return scores

        monkeypatch.setattr(FactorScores, "fit", classmethod(fit_point))
        grid = [{"l2": 10.0}, {"l2": 100.0}, {"l2": 300.0}]
    else:
        from recsys.models.itemknn import ItemKNN

        real = ItemKNN.fit_from_similarity

        def fit_point(self, *args):
            gc.collect()
            held_at_fit.append(sum(ref() is not None for ref in alive))
            fitted = real(self, *args)
            alive.append(weakref.ref(fitted))
            return fitted

        monkeypatch.setattr(ItemKNN, "fit_from_similarity", fit_point)
        grid = [{"k": 5, "shrink": 0.0}, {"k": 10, "shrink": 0.0}, {"k": 20, "shrink": 10.0}]
    evaluating.tune(kind, make_split(small_data, 0), grid)
    assert held_at_fit == [0, 0, 0]
