"""The NTK kernel ridge model (recsys.models.kernel_ridge): its kernel against a wide random network, its
scores against kernel ridge regression solved the long way on the Kronecker product, serving a new history
as regression predicts it, tuning from shared spectra, and the memory its fit takes against the guard."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import memory_budgets as budgets
from recsys.evaluating import _grid_models, make_split
from recsys.interactions import IdMap, interaction_matrix
from recsys.memory_budgets import GIB, Catalogue, FixedMemory, memory_source
from recsys.models import load_model
from recsys.models.kernel_ridge import KernelRidge, KernelSpectra, ntk_of_cosines, self_kernel


def _random_binary(users: int, items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < density).astype(np.float32)
    dense[np.arange(users), rng.integers(0, items, users)] = 1.0  # nobody empty
    return sp.csr_matrix(dense)


def _fitted(matrix: sp.csr_matrix, **params) -> KernelRidge:
    users, items = IdMap(np.arange(matrix.shape[0]) + 100), IdMap(np.arange(matrix.shape[1]) + 500)
    return KernelRidge(**params).fit(matrix, users, items)


def _dense_kernel(rows: np.ndarray, others: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The NTK between binary rows, each column scaled by ``weights`` and the rows normalised: dense, the
    plain way."""
    a, b = rows * weights, others * weights
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return ntk_of_cosines(a @ b.T)


def _long_way(matrix: sp.csr_matrix, l2: float, damping: float, extra: np.ndarray | None = None) -> np.ndarray:
    """Kernel ridge regression on K_u ⊗ K_i by one dense solve; scores of the training users, or of ``extra``
    (a new binary history) predicted from the same coefficients. Each item in a user's row weighs (its
    number of users) ** -damping, each user in an item's column (their number of items) ** -damping."""
    x = matrix.toarray().astype(np.float64)
    item_weights, user_weights = x.sum(axis=0) ** -damping, x.sum(axis=1) ** -damping
    ku, ki = _dense_kernel(x, x, item_weights), _dense_kernel(x.T, x.T, user_weights)
    assert np.allclose(ku, self_kernel(matrix, damping)) and np.allclose(ki, self_kernel(matrix.T, damping))
    product = np.kron(ku, ki)
    coefficients = np.linalg.solve(product + l2 * np.eye(len(product)), x.ravel()).reshape(x.shape)
    if extra is None:
        return ku @ coefficients @ ki
    row = _dense_kernel(extra[None, :], x, item_weights)[0]  # k_u(extra, each training user)
    return row @ coefficients @ ki


def test_the_kernel_is_a_wide_relu_networks_tangent_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=3), rng.normal(size=3)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    # f(v) = Σ_j a_j relu(w_j·v) / √m: Θ(x, y) = E[relu(w·x) relu(w·y)] + (x·y) E[relu'(w·x) relu'(w·y)]
    w = rng.normal(size=(400_000, 3))
    wx, wy = w @ x, w @ y
    sampled = np.mean(np.maximum(wx, 0) * np.maximum(wy, 0)) + (x @ y) * np.mean((wx > 0) & (wy > 0))
    assert ntk_of_cosines(np.array([x @ y]))[0] == pytest.approx(sampled, abs=0.01)
    assert ntk_of_cosines(np.array([1.0, 0.0, -1.0])) == pytest.approx([1.0, 1 / (2 * np.pi), 0.0])
    assert ntk_of_cosines(np.array([1.0, 0.5]), np.array([False, True]))[0] == 0.0  # an empty history's


@pytest.mark.parametrize(("l2", "damping"), [(0.5, 0.0), (4.0, 0.0), (2.0, 0.25), (1.0, 0.8)])
def test_power_one_is_kernel_ridge_regression_on_the_kronecker_kernel(l2, damping):
    matrix = _random_binary(7, 6, 0.35, seed=int(l2 * 10))
    model = _fitted(matrix, l2=l2, power=1.0, damping=damping)
    expected = _long_way(matrix, l2, damping)
    assert np.allclose(model.score_matrix(matrix), expected, atol=2e-5)
    for row in range(matrix.shape[0]):  # serving one history gives the batch's row
        seen = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]
        assert np.allclose(model.score_history(seen), expected[row], atol=2e-5)


@pytest.mark.parametrize("damping", [0.0, 0.25])
def test_a_new_history_is_scored_as_the_regression_predicts_it(damping):
    matrix = _random_binary(8, 6, 0.35, seed=3)
    model = _fitted(matrix, l2=2.0, power=1.0, damping=damping)
    new = np.zeros(6)
    new[[0, 4]] = 1.0
    expected = _long_way(matrix, 2.0, damping, extra=new)
    assert np.allclose(model.score_history(np.array([0, 4])), expected, atol=2e-5)
    assert np.allclose(model.score_matrix(sp.csr_matrix(new[None, :]))[0], expected, atol=2e-5)
    assert np.allclose(model.score_history(np.array([4, 0, 4])), expected, atol=2e-5)  # an item given twice
    assert np.allclose(model.score_history(np.array([], np.int64)), 0.0)  # nothing known: no signal


def test_damping_makes_a_shared_niche_item_count_for_more_than_a_shared_blockbuster():
    # user 0 shares item 0 (everyone's) with user 1 and item 1 (only theirs) with user 2
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 1, 1]],
                                    np.float32))
    plain, damped = self_kernel(matrix, 0.0), self_kernel(matrix, 0.5)
    assert plain[0, 1] == pytest.approx(plain[0, 2])  # binary histories: one shared item each
    assert damped[0, 2] > damped[0, 1] + 0.01
    model = _fitted(matrix, damping=0.5)
    assert np.allclose(model._user_kernel(matrix[:1])[0], damped[0])


def test_a_sharper_filter_keeps_more_of_the_strong_directions_and_less_of_the_weak():
    matrix = _random_binary(20, 15, 0.3, seed=5)
    spectra = KernelSpectra.of(matrix, KernelRidge().params["damping"])
    products = np.outer(spectra.user_values, spectra.item_values)
    strong, weak = products > 4.0, (products > 0) & (products < 4.0)
    soft, sharp = (_fitted(matrix, l2=4.0, power=p) for p in (1.0, 2.0))
    # Uᵀ (S) V is the filter times Uᵀ X V: compare the two filters where the projection is not tiny
    projected = spectra.projected
    ratio = {}
    for name, model in (("soft", soft), ("sharp", sharp)):
        filtered = spectra.user_vectors.T @ model.score_matrix(matrix).astype(np.float64) @ spectra.item_vectors
        big = np.abs(projected) > 1e-3
        ratio[name] = np.where(big, filtered / np.where(big, projected, 1.0), np.nan)
    assert np.nanmin(ratio["sharp"][strong] - ratio["soft"][strong]) > -1e-4
    assert np.nanmax(ratio["sharp"][weak] - ratio["soft"][weak]) < 1e-4
    assert np.nanmax(ratio["soft"][strong]) < 1.0 + 1e-4 and np.nanmin(ratio["soft"][weak]) > -1e-4


def test_tuning_from_shared_spectra_gives_the_fitted_models_weights(small_data):
    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    matrix = interaction_matrix(small_data, users, items)
    spectra = KernelSpectra.of(matrix, 0.0)
    for params in ({"l2": 2.0, "power": 1.0, "damping": 0.0}, {"l2": 6.0, "power": 2.0, "damping": 0.0}):
        shared = KernelRidge.from_spectra(spectra, matrix, users, items, **params)
        alone = KernelRidge(**params).fit(matrix, users, items)
        assert np.array_equal(shared.weights, alone.weights)
    with pytest.raises(ValueError, match="spectra of damping 0.0 for a model of damping 0.25"):
        KernelRidge.from_spectra(spectra, matrix, users, items, l2=2.0)


def test_a_grid_over_damping_tunes_each_point_as_its_own_fit(small_data):
    split = make_split(small_data, 0)
    grid = [{"l2": 3.0, "damping": 0.5}, {"l2": 2.0}, {"l2": 3.0, "damping": 0.0}, {"l2": 4.0, "damping": 0.5}]
    tuned = {position: model for position, _params, model in _grid_models("kernel", grid, split, threads=1)}
    assert sorted(tuned) == [0, 1, 2, 3]
    for position, params in enumerate(grid):
        alone = KernelRidge(**params).fit(split.train, split.users, split.items)
        assert tuned[position].params == alone.params
        assert np.array_equal(tuned[position].weights, alone.weights)


def test_the_artifact_round_trips_and_similar_items_come_from_the_item_kernel(small_data, tmp_path):
    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    matrix = interaction_matrix(small_data, users, items)
    model = KernelRidge(l2=3.0, power=2.0).fit(matrix, users, items)
    loaded = load_model(model.save(tmp_path / "kernel"))
    assert loaded.kind == "kernel" and loaded.params == {"l2": 3.0, "power": 2.0, "damping": 0.25}
    user = model.known_users[3]
    assert loaded.recommend_user(user, [], 10) == model.recommend_user(user, [], 10)
    fresh = [int(model.known_items[5]), int(model.known_items[9])]
    assert loaded.recommend_user(user, fresh, 10) == model.recommend_user(user, fresh, 10)
    item = model.known_items[0]
    expected = self_kernel(sp.csr_matrix(matrix.T), 0.25)[0]
    expected[0] = -np.inf
    top = np.argsort(-expected, kind="stable")[:5]
    assert [i for i, _ in loaded.similar(item, 5)] == items.ids[top].tolist()


def test_an_artifact_from_before_damping_is_served_with_binary_histories(small_data, tmp_path):
    import json

    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    matrix = interaction_matrix(small_data, users, items)
    binary = KernelRidge(l2=3.0, damping=0.0).fit(matrix, users, items)
    saved = binary.save(tmp_path / "kernel")
    meta = json.loads((saved / "model.json").read_text())
    del meta["params"]["damping"]
    (saved / "model.json").write_text(json.dumps(meta))
    loaded = load_model(saved)
    assert loaded.params["damping"] == 0.0
    seen = np.array([0, 3, 7])
    assert np.allclose(loaded.score_history(seen), binary.score_history(seen))


@pytest.mark.parametrize(("bad", "message"), [({"l2": 0.0}, "must be positive"), ({"l2": -1.0}, "must be positive"),
                                              ({"power": 0.0}, "must be positive"),
                                              ({"damping": -0.1}, "between 0 and 2")])
def test_a_parameter_out_of_range_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        KernelRidge(**bad)


def test_the_measured_peak_of_a_fit_is_within_the_guards_estimate():
    from recsys.synthesizing import synthesize

    data = synthesize(600, 900, mean_per_user=30, seed=4)
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    matrix = interaction_matrix(data, users, items)
    n_users, n_items = matrix.shape
    estimate = budgets.need_bytes("kernel", Catalogue(n_items, n_users, matrix.nnz))
    with memory_source(FixedMemory(64 * GIB)):  # no psutil inside the measurement
        KernelRidge().fit(matrix[:50, :80], IdMap(users.ids[:50]), IdMap(items.ids[:80]))  # warm
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            KernelRidge().fit(matrix, users, items)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    print(f"kernel on {n_users} users × {n_items} items: traced peak {peak / 2**20:.1f} MiB, "
          f"estimate {estimate / 2**20:.1f} MiB ({estimate / peak:.2f}x)")
    assert peak >= 4 * (n_users**2 + n_items**2)  # both kernels' eigenvectors were built, and traced
    assert peak <= estimate <= 2.5 * peak


def test_a_known_user_without_new_events_is_served_from_the_kept_scores(small_data, monkeypatch):
    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    matrix = interaction_matrix(small_data, users, items)
    model = KernelRidge(l2=3.0, power=2.0).fit(matrix, users, items)
    assert model.known_scores.shape == matrix.shape
    assert np.allclose(model.known_scores, model.score_matrix(matrix), atol=1e-5)
    scored = []
    real = model.score_history
    monkeypatch.setattr(model, "score_history", lambda seen: scored.append(len(seen)) or real(seen))
    for user in model.known_users[:15]:
        kept = model.recommend_user(user, [], 10, exclude={int(items.ids[0])})
        assert not scored  # one row read, no history scored
        again = model.recommend(model.history(user), 10, exclude={int(items.ids[0])})  # the scoring path
        assert [i for i, _ in kept] == [i for i, _ in again]
        assert np.allclose([s for _, s in kept], [s for _, s in again], atol=1e-5)
        scored.clear()
    fresh = next(int(i) for i in items.ids if int(i) not in set(model.history(model.known_users[0])))
    model.recommend_user(model.known_users[0], [fresh], 10)  # a new event: the history is scored
    assert scored == [len(model.history(model.known_users[0])) + 1]
