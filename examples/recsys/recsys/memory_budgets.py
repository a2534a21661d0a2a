"""How much memory a model's fit needs, and whether the job has it.

This guard replaces a fixed limit on the catalogue: a fit that would not fit
is refused *before* it allocates, with a :class:`lichen.DataError` naming the
model, the catalogue, the memory it needs and the memory available, and the
models that fit instead. ``train`` and ``evaluate`` use the same arithmetic to
pick their default models and how many fits run in parallel.

Peak bytes of one fit, beyond the data it is given (``n`` items, ``U`` users,
``z`` interactions, ``f`` ALS factors, ``k`` ItemKNN neighbours; ``b`` the
entries of one block of rows, ``block_rows(n) · n``, at most 2²⁴ and an
eighth of n²; ``i`` = 4 bytes an index, 8 past 2³¹ entries)::

    Gram     2z(4+i) + i(n+1) + b(4+i) + i·b/n       Xᵀ as CSR, one slice of it, one block of XᵀX as sparse
             (+ 4b for a float64 Gram)                (+ that block densified before the cast)
    EASE     4n² + Gram + 16n                         the float32 Gram, factorised (Cholesky), inverted,
                                                      symmetrised and scaled into the weights in place
    EASE64   12n² + Gram + 16n                        the float64 retry: its Gram/inverse, then the float32 copy
    ItemKNN  4n² + max(Gram, 12b + 28kn) + 16n        the similarity in place; per block of columns a negated
                                                      copy (4b) and argpartition's int64 indices (8b); the k·n
                                                      neighbours (rows, values, mask, CSC, CSR)
    ALS      2z(4+i) + 4(U+n) + 8f(U+n) + 8fn         implicit's α·X and Xᵀ copies, its float32 factors (and the
                                                      ×0.01 copies at init), our float64 item factors
    pop      8U + 16n
    kernel   4(U² + n²) + 24·max(U, n)² + 40Un        the two float32 eigenvector matrices kept; one kernel
                                                      built in float64 (cosines, arccos, result), cast and
                                                      eigendecomposed in place (LAPACK's workspace); Uᵀ X V,
                                                      the filter and W's float32 products

The memory available is the least of: the machine's free RAM (psutil's
``available``); the job's ``RLIMIT_DATA`` (how ``lichen run`` applies a job's
``resources.memory``) less the private memory this process already holds; and
its cgroup's memory limit less its usage (in a container). A fit may use
``1 - SAFETY_MARGIN`` (85 %) of it. ``memory_source`` swaps the source (tests
use :class:`FixedMemory`, so they never depend on the machine's RAM).

Fits that run at once in parallel processes share the machine's RAM:
:func:`parallel_fits` bounds their number so that the largest of them fit
together.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

GIB = 1024**3
MIB = 1024**2
SAFETY_MARGIN = 0.15
BLOCK_ENTRIES = 1 << 24
KINDS = ("kernel", "ease", "als", "itemknn", "pop")
NAMES = {"kernel": "Kernel ridge (NTK)", "ease": "EASE", "als": "ALS", "itemknn": "ItemKNN", "pop": "Popularity"}
DEFAULT_K = 200  # the largest k in ItemKNN's grid
DEFAULT_FACTORS = 64  # ALS's default (its grid goes to 48)
UNLIMITED = 1 << 60  # a cgroup limit this large means none


# ------------------------------------------------------------------ arithmetic (pure)


@dataclass(frozen=True)
class Catalogue:
    """The shape of a fit's data: a users × items matrix with ``nnz`` interactions."""

    n_items: int
    n_users: int
    nnz: int


def block_rows(n: int) -> int:
    """Rows per block of an n × n dense pass: at most ``BLOCK_ENTRIES`` entries and an eighth of the rows."""
    if n <= 0:
        return 1
    return max(1, min(n, BLOCK_ENTRIES // n, -(-n // 8)))


def _index_bytes(entries: int) -> int:
    return 4 if entries < 2**31 else 8


def gram_bytes(n_items: int, nnz: int, dtype: Any = np.float32) -> int:
    """Transient bytes of :func:`recsys.models.grams.dense_gram`, beyond its n × n result."""
    rows = block_rows(n_items)
    block = rows * n_items
    index = _index_bytes(max(nnz, block))
    transposed = 2 * nnz * (4 + index) + index * (n_items + 1)  # Xᵀ as CSR, and one row slice of it
    product = block * (4 + index) + index * (rows + 1)  # one block of XᵀX, sparse
    cast = 4 * block if np.dtype(dtype).itemsize != 4 else 0  # densified float32 block before the cast
    return transposed + product + cast


def fit_peak_bytes(kind: str, n_items: int, n_users: int, nnz: int, dtype: Any = np.float32, *,
                   k: int = DEFAULT_K, factors: int = DEFAULT_FACTORS) -> int:
    """Peak bytes fitting ``kind`` allocates (the formulas in the module docstring).

    ``dtype`` is EASE's: float32, or float64 for the retry after a failed float32 Cholesky."""
    n, users, z = int(n_items), int(n_users), int(nnz)
    index = _index_bytes(z)
    if kind == "ease":
        dense = 4 * n * n if np.dtype(dtype).itemsize == 4 else 12 * n * n
        return dense + gram_bytes(n, z, dtype) + 16 * n
    if kind == "itemknn":
        k = max(1, min(int(k), n - 1))
        top_k = 12 * block_rows(n) * n + 28 * k * n
        return 4 * n * n + max(gram_bytes(n, z), top_k) + 16 * n
    if kind == "als":
        f = int(factors)
        return 2 * z * (4 + index) + 4 * (users + n) + 8 * f * (users + n) + 8 * f * n
    if kind == "pop":
        return 8 * users + 16 * n
    if kind == "kernel":
        return 4 * (users * users + n * n) + 24 * max(users, n) ** 2 + 40 * users * n
    raise ValueError(f"unknown model {kind!r}; expected one of {', '.join(KINDS)}")


def _sizes(params: Mapping[str, Any] | None) -> dict[str, int]:
    params = params or {}
    return {"k": int(params.get("k", DEFAULT_K)), "factors": int(params.get("factors", DEFAULT_FACTORS))}


def need_bytes(kind: str, catalogue: Catalogue, params: Mapping[str, Any] | None = None,
               dtype: Any = np.float32) -> int:
    return fit_peak_bytes(kind, catalogue.n_items, catalogue.n_users, catalogue.nnz, dtype, **_sizes(params))


def usable_bytes(available_bytes: int, margin: float = SAFETY_MARGIN) -> int:
    return int(max(0, available_bytes) * (1.0 - margin))


def fits(need: int, available_bytes: int, margin: float = SAFETY_MARGIN) -> bool:
    return need <= usable_bytes(available_bytes, margin)


def plan_models(kinds: Iterable[str], catalogue: Catalogue, available_bytes: int) -> tuple[list[str], dict[str, int]]:
    """(the kinds that fit, in order; {kind: bytes needed} for those that do not)."""
    kept, skipped = [], {}
    for kind in kinds:
        need = need_bytes(kind, catalogue)
        if fits(need, available_bytes):
            kept.append(kind)
        else:
            skipped[kind] = need
    return kept, skipped


def parallel_fits(needs: Iterable[int], available_bytes: int, wanted: int) -> int:
    """How many processes may fit at once (≤ ``wanted``, ≥ 1): the largest needs, together, must fit."""
    largest = sorted(needs, reverse=True)
    budget, count = usable_bytes(available_bytes), 0
    for need in largest[:max(1, wanted)]:
        if count and need > budget:
            break
        budget -= need
        count += 1
    return max(1, count)


def format_bytes(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= MIB:
        return f"{round(n / MIB):,} MiB"
    return f"{round(n / 1024):,} KiB" if n >= 1024 else f"{max(0, n)} bytes"


# ------------------------------------------------------------------ what is available (I/O)


@dataclass(frozen=True)
class Available:
    """Bytes available to a fit, what limits them, and whether that is the job's own limit
    (more memory for the job helps) rather than the machine's."""

    bytes: int
    limited_by: str
    job_limit: bool = False


class MemorySource(Protocol):
    def available(self) -> Available: ...


@dataclass(frozen=True)
class FixedMemory:
    """The in-memory twin of :class:`SystemMemory`: always ``bytes`` available."""

    bytes: int
    limited_by: str = "a fixed budget"
    job_limit: bool = False

    def available(self) -> Available:
        return Available(int(self.bytes), self.limited_by, self.job_limit)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class SystemMemory:
    """Free RAM, the job's ``RLIMIT_DATA`` and its cgroup limit, whichever leaves least."""

    def __init__(self, cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")):
        self.cgroup_root = cgroup_root
        self.proc_cgroup = proc_cgroup

    def available(self) -> Available:
        import psutil

        options = [Available(int(psutil.virtual_memory().available), "free RAM on this machine")]
        soft, _hard = resource.getrlimit(resource.RLIMIT_DATA)
        if soft != resource.RLIM_INFINITY:
            held = int(psutil.Process().memory_info().data)  # what RLIMIT_DATA counts already
            options.append(Available(max(0, soft - held), f"the job's memory limit of {format_bytes(soft)} "
                                     "(resources.memory), less what the job holds", job_limit=True))
        cgroup = self.cgroup()
        if cgroup is not None:
            options.append(cgroup)
        return min(options, key=lambda option: option.bytes)

    def cgroup(self) -> Available | None:
        """The cgroup's memory limit less its usage (reclaimable inactive file cache not counted as used)."""
        try:
            lines = self.proc_cgroup.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _hierarchy, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
            if controllers == "":  # cgroup v2
                dirs, files = [self.cgroup_root / path.lstrip("/"), self.cgroup_root], (
                    "memory.max", "memory.current", "inactive_file")
            elif "memory" in controllers.split(","):  # cgroup v1
                base = self.cgroup_root / "memory"
                dirs, files = [base / path.lstrip("/"), base], (
                    "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            else:
                continue
            for directory in dirs:
                limit = _read_int(directory / files[0])
                if limit is None or limit >= UNLIMITED:
                    continue
                used = max(0, (_read_int(directory / files[1]) or 0) - _stat(directory / "memory.stat", files[2]))
                return Available(max(0, limit - used), f"the cgroup memory limit of {format_bytes(limit)} "
                                 f"({directory / files[0]}), less its usage", job_limit=True)
        return None


_source: MemorySource = SystemMemory()


def available_memory() -> Available:
    return _source.available()


@contextlib.contextmanager
def memory_source(source: MemorySource) -> Iterator[MemorySource]:
    """Use ``source`` for what is available (a :class:`FixedMemory` in tests), then put the old one back."""
    global _source
    previous, _source = _source, source
    try:
        yield source
    finally:
        _source = previous


# ------------------------------------------------------------------ the guard


def models_command() -> str:
    """How the user picks models in this job: ``train --models`` under ``lichen run``, else ``--models``."""
    job = os.environ.get("LICHEN_JOB", "")  # set by lichen run
    return f"{job} --models" if job in ("train", "evaluate") else "--models"


def more_memory(available: Available) -> str:
    """What gets a job more memory: its own limit when that is what binds, else the machine's."""
    return ("give the job more memory (resources.memory in lichen.yaml)" if available.job_limit
            else "free memory or use a machine with more")


def refusal(kind: str, catalogue: Catalogue, need: int, available: Available, alternatives: list[str],
            command: str = "--models") -> str:
    """The one-line reason a fit is refused, and what to do instead."""
    instead = f"{command} {','.join(alternatives)}" if alternatives else "no model fits"
    more = more_memory(available)
    return (f"{NAMES.get(kind, kind)} on {catalogue.n_items:,} items ({catalogue.n_users:,} users, "
            f"{catalogue.nnz:,} interactions) needs {format_bytes(need)}, {format_bytes(available.bytes)} available "
            f"({available.limited_by}; a fit may use {1 - SAFETY_MARGIN:.0%} of it): {instead}, or {more}")


def check_fit(kind: str, n_items: int, n_users: int, nnz: int, *, params: Mapping[str, Any] | None = None) -> int:
    """Raise :class:`lichen.DataError` if fitting ``kind`` on this data would not fit in memory,
    before anything is allocated; else return the bytes it needs. Unknown kinds pass."""
    if kind not in KINDS:
        return 0
    catalogue = Catalogue(int(n_items), int(n_users), int(nnz))
    need = need_bytes(kind, catalogue, params)
    available = available_memory()
    if fits(need, available.bytes):
        return need
    from lichen import DataError

    others = [other for other in KINDS if other != kind and fits(need_bytes(other, catalogue), available.bytes)]
    command = models_command()
    raise DataError(refusal(kind, catalogue, need, available, others, command), where=f"{command} {kind}")
