"""EASE on an accelerator: the torch path (run here on the CPU, as ``torch-cpu``) gives the LAPACK path's weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from lichen import DataError

from recsys.evaluating import make_split, tune
from recsys.interactions import IdMap, interaction_matrix
from recsys.models import accelerators, make_model
from recsys.models.accelerators import Accelerator, find_accelerator

torch = pytest.importorskip("torch", reason="torch is not installed (make test installs its CPU build where the "
                                            "machine keeps the wheel)")


@pytest.fixture
def matrix_maps(small_data):
    users, items = IdMap.of(small_data.users), IdMap.of(small_data.items)
    return interaction_matrix(small_data, users, items), users, items


def test_ease_through_torch_gives_the_lapack_weights(matrix_maps, monkeypatch):
    monkeypatch.setenv("RECSYS_ACCELERATOR", "none")
    cpu = make_model("ease", l2=50.0).fit(*matrix_maps)
    monkeypatch.setenv("RECSYS_ACCELERATOR", "torch-cpu")
    device = make_model("ease", l2=50.0).fit(*matrix_maps)
    assert (cpu.fitted_on, device.fitted_on) == ("cpu", "torch on cpu")
    assert device.weights.dtype == np.float32 and device.weights.flags.c_contiguous
    assert np.all(np.diag(device.weights) == 0)
    np.testing.assert_allclose(device.weights, cpu.weights, rtol=1e-3, atol=1e-5)
    user = int(matrix_maps[1].ids[0])
    assert [i for i, _ in device.recommend(device.history(user), 10)] == [i for i, _ in cpu.recommend(cpu.history(user), 10)]


def test_tuning_on_the_device_chooses_what_the_cpu_chooses(small_data, monkeypatch):
    split = make_split(small_data, 0)
    grid = [{"l2": 10.0}, {"l2": 100.0}, {"l2": 1000.0}]
    monkeypatch.setenv("RECSYS_ACCELERATOR", "none")
    cpu_params, cpu_valid, _ = tune("ease", split, grid)
    monkeypatch.setenv("RECSYS_ACCELERATOR", "torch-cpu")
    device_params, device_valid, _ = tune("ease", split, grid)
    assert device_params == cpu_params
    assert device_valid["ndcg"] == pytest.approx(cpu_valid["ndcg"], abs=1e-3)


def test_a_fit_too_big_for_the_device_runs_on_the_cpu_and_says_so(matrix_maps, monkeypatch, caplog):
    monkeypatch.setattr(accelerators, "find_accelerator", lambda: Accelerator("torch", "cpu", free_bytes=1024))
    with caplog.at_level(logging.WARNING):
        model = make_model("ease", l2=50.0).fit(*matrix_maps)
    assert model.fitted_on == "cpu"
    assert "fitting on the CPU" in caplog.text and "1 KiB free" in caplog.text


def test_a_gram_that_is_not_positive_definite_says_none_so_the_cpu_retries():
    assert accelerators.ease_weights(-np.eye(4, dtype=np.float32), 0.0, Accelerator("torch", "cpu", 1 << 30)) is None


def test_the_choice_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_ACCELERATOR", "none")
    assert find_accelerator() is None
    monkeypatch.setenv("RECSYS_ACCELERATOR", "torch-cpu")
    assert str(find_accelerator()) == "torch on cpu"
    monkeypatch.setenv("RECSYS_ACCELERATOR", "auto")
    found = find_accelerator()  # a GPU only where torch or CuPy sees one
    assert (found is None) == (not torch.cuda.is_available() and not _cupy_sees_a_gpu())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what lichen run gives a job with resources.gpu: 0
    assert find_accelerator() is None
    monkeypatch.setenv("RECSYS_ACCELERATOR", "gpu")
    with pytest.raises(DataError, match="expected one of auto, none, torch-cpu") as error:
        find_accelerator()
    assert error.value.where == "env RECSYS_ACCELERATOR"


def _cupy_sees_a_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except (ImportError, RuntimeError):
        return False
