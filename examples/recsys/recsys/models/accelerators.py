"""Where EASE's dense algebra runs: a CUDA GPU, through torch or CuPy, when the job sees one; else LAPACK.

Chosen at run time, per fit (``RECSYS_ACCELERATOR``):

* ``auto`` (default): torch if it is installed and CUDA shows it a device, else CuPy likewise, else none;
* ``none``: always the CPU;
* ``torch-cpu``: torch on the CPU, the same code path as on a GPU; for tests and debugging.

The job sees the GPUs its ``resources.gpu`` grants: ``lichen run`` sets ``CUDA_VISIBLE_DEVICES`` to
them, and to nothing for ``gpu: 0``, so a job that asks for no GPU trains on the CPU.

On a device EASE is one Cholesky factorisation and one inverse from it, in float32 as on the CPU:
(XᵀX + λI) is factored as L·Lᵀ, P = (L·Lᵀ)⁻¹ and B = −P / diag(P) with a zero diagonal. The device
holds the Gram matrix, its factor and P at once (12n² bytes); a fit that would not fit in the device's
free memory runs on the CPU instead, and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHOICES = ("auto", "none", "torch-cpu")


@dataclass(frozen=True)
class Accelerator:
    library: str  # "torch" or "cupy"
    device: str  # "cuda" or "cpu" (torch-cpu)
    free_bytes: int

    def __str__(self) -> str:
        return f"{self.library} on {self.device}"


def find_accelerator() -> Accelerator | None:
    """The device this process may use for EASE (``RECSYS_ACCELERATOR``), or None for the CPU path."""
    choice = os.environ.get("RECSYS_ACCELERATOR", "auto").strip() or "auto"
    if choice not in CHOICES:
        from lichen import DataError

        raise DataError(f"expected one of {', '.join(CHOICES)}, got {choice!r}", where="env RECSYS_ACCELERATOR")
    if choice == "none":
        return None
    if choice == "torch-cpu":
        import psutil

        return Accelerator("torch", "cpu", psutil.virtual_memory().available)
    if not _gpu_visible():  # not even a device node: no need to import torch (seconds, hundreds of MB) to know
        return None
    try:
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return Accelerator("torch", "cuda", int(free))
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            free, _total = cupy.cuda.runtime.memGetInfo()
            return Accelerator("cupy", "cuda", int(free))
    except (ImportError, RuntimeError):  # no CuPy, or no CUDA driver for it
        pass
    return None


def _gpu_visible() -> bool:
    """Whether CUDA could show this process a device: an NVIDIA device node, and ``CUDA_VISIBLE_DEVICES`` not
    empty (``lichen run`` empties it for a job with ``resources.gpu: 0``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def device_bytes(n_items: int) -> int:
    """What EASE's fit holds on the device: the Gram matrix, its Cholesky factor and the inverse."""
    return 12 * n_items * n_items


def ease_weights(gram: np.ndarray, l2: float, accelerator: Accelerator) -> np.ndarray | None:
    """EASE's weights B (float32, n × n, C order) from the Gram matrix XᵀX on ``accelerator``; None when
    XᵀX + λI is not positive definite in float32 (the caller retries in float64 on the CPU)."""
    if accelerator.library == "torch":
        return _torch_weights(gram, l2, accelerator.device)
    return _cupy_weights(gram, l2)


def _torch_weights(gram: np.ndarray, l2: float, device: str) -> np.ndarray | None:
    import torch

    with torch.no_grad():
        matrix = torch.from_numpy(gram).to(device)
        matrix.diagonal().add_(l2)
        factor, info = torch.linalg.cholesky_ex(matrix)
        del matrix
        if int(info) != 0:
            return None
        inverse = torch.cholesky_inverse(factor)
        del factor
        diagonal = inverse.diagonal().clone()
        inverse.div_(-diagonal)  # column j divided by -P[j, j]
        inverse.diagonal().zero_()
        return np.ascontiguousarray(inverse.cpu().numpy(), dtype=np.float32)


def _cupy_weights(gram: np.ndarray, l2: float) -> np.ndarray | None:
    import cupy

    matrix = cupy.asarray(gram)
    matrix[cupy.diag_indices(matrix.shape[0])] += l2
    factor = cupy.linalg.cholesky(matrix)  # CuPy leaves NaNs, not an error, when it is not positive definite
    del matrix
    if not bool(cupy.isfinite(cupy.diag(factor)).all()):
        return None
    identity = cupy.eye(factor.shape[0], dtype=factor.dtype)
    import cupyx.scipy.linalg

    lower_inverse = cupyx.scipy.linalg.solve_triangular(factor, identity, lower=True)
    del factor, identity
    inverse = lower_inverse.T @ lower_inverse  # P = L⁻ᵀ·L⁻¹
    del lower_inverse
    inverse /= -cupy.diag(inverse).copy()
    inverse[cupy.diag_indices(inverse.shape[0])] = 0.0
    return cupy.asnumpy(inverse).astype(np.float32, copy=False)
