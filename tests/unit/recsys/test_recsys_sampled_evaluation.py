"""Large datasets: validation and test on a seeded sample of users, and one split seed, by default."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from recsys import evaluation_runs, jobs
from recsys.evaluating import (
    LARGE_INTERACTIONS,
    LARGE_USERS,
    SAMPLED_USERS,
    evaluate_kind,
    evaluation_rows,
    fit,
    make_split,
    ranking_metrics,
    top_k,
)


def test_the_sample_is_seeded_per_split_sorted_and_none_means_everyone(small_data):
    split = make_split(small_data, 0)
    n_users = split.train.shape[0]
    assert evaluation_rows(split, 0) is None and evaluation_rows(split, n_users) is None
    rows = evaluation_rows(split, 40)
    assert len(rows) == 40 == len(set(rows.tolist())) and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, evaluation_rows(make_split(small_data, 0), 40))
    assert not np.array_equal(rows, evaluation_rows(make_split(small_data, 1), 40))


def test_a_sampled_run_ranks_exactly_the_sampled_users(small_data):
    split = make_split(small_data, 2)
    result = evaluate_kind("ease", split, grid=[{"l2": 10.0}, {"l2": 100.0}], eval_users=50)
    assert result["eval_users"] == 50
    rows = evaluation_rows(split, 50)
    # the test figure is the refit model's metrics over those 50 users, and no others
    seen = split.train + split.valid
    seen.data[:] = 1.0
    model = fit("ease", result["params"], seen, split.users, split.items)
    expected = ranking_metrics(top_k(model, seen[rows], seen[rows]), split.test[rows])
    assert result["test"] == expected
    everyone = ranking_metrics(top_k(model, seen, seen), split.test)
    assert expected["users"] < everyone["users"] and expected != everyone
    assert evaluate_kind("pop", split)["eval_users"] == split.train.shape[0]


def test_a_sampled_evaluation_is_its_own_run_and_all_users_keep_their_key():
    everyone = evaluation_runs.run_key("ds", 0, "ease", True)
    assert evaluation_runs.run_key("ds", 0, "ease", True, 0) == everyone
    assert evaluation_runs.run_key("ds", 0, "ease", True, 2000) not in (everyone,
                                                                         evaluation_runs.run_key("ds", 0, "ease", True, 3000))


def _protocol(seeds, eval_users, users, rows):
    out = io.StringIO()
    chosen = jobs._protocol(seeds, eval_users, {"users": users, "rows": rows}, Console(file=out, width=200))
    return chosen, out.getvalue()


def test_large_datasets_default_to_one_seed_and_a_user_sample_and_say_so():
    assert _protocol(None, None, 943, 100_000) == (([0, 1, 2], 0), "")
    (seeds, users), said = _protocol(None, None, LARGE_USERS + 1, LARGE_INTERACTIONS + 1)
    assert (seeds, users) == ([0], SAMPLED_USERS)
    assert "one split seed" in said and f"{SAMPLED_USERS:,} sampled users" in said and "--eval-users" in said
    # what the user asks for wins, and a sample as large as the users is everyone
    assert _protocol([3, 4], 0, LARGE_USERS + 1, LARGE_INTERACTIONS + 1) == (([3, 4], 0), "")
    assert _protocol(None, 5_000, 4_000, 10)[0] == ([0, 1, 2], 0)
