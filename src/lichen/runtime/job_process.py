"""The process side of a job: ``python -m lichen.runtime.job_process``.

``lichen run`` starts every job through this module so each job gets the
same treatment as a replica::

    python -m lichen.runtime.job_process [--memory-bytes N] [--cpu-cores C] [--parent-pid P] module:function -- ARG...

It applies the resource limits (an address-space rlimit for memory, CPU
affinity to ``ceil(C)`` cores), turns SIGTERM into ``KeyboardInterrupt`` so
``with`` blocks unwind (``atomic_output`` removes its temporaries), imports
``module:function`` from the working directory (the app directory) and calls
``function(argv)``. The return value is the exit code (``None`` means 0); a
:class:`lichen.errors.LichenError` becomes one line on stderr and its exit
code; an interrupt exits 130 (SIGINT) or 143 (SIGTERM). With ``--parent-pid``
the job is sent SIGTERM when that runner dies, even by SIGKILL.

Logging is Lichen's one style (:mod:`lichen.logs`): the job's own ``logging``
records and this module's events (``job_failed``, ``job_terminated``, ...) are
JSON lines on stderr carrying ``job`` and ``run_id``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import resource
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from lichen.errors import ConfigError, LichenError
from lichen.logs import configure, get_logger

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
JOB_ENV = "LICHEN_JOB"
RUN_ID_ENV = "LICHEN_RUN_ID"
log = get_logger("lichen.job")


class JobTerminated(KeyboardInterrupt):
    """Raised in the job's main thread when SIGTERM arrives."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Ignore further SIGTERMs while unwinding so cleanup runs to the end.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise JobTerminated()


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGTERM this job if the runner dies (even by SIGKILL)."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def apply_resources(memory_bytes: int | None, cpu_cores: float | None) -> None:
    """Limit this process the way a replica is limited (see :mod:`lichen.runtime.processes`):
    ``RLIMIT_DATA`` caps private writable memory, not address space, so shared
    libraries and read-only model weights do not count against ``memory``."""
    if memory_bytes:
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    if cpu_cores and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        wanted = max(1, min(len(available), math.ceil(cpu_cores - 1e-9)))
        os.sched_setaffinity(0, available[:wanted])


def resolve_entrypoint(entrypoint: str) -> Callable[[list[str]], Any]:
    """Import ``module:function`` and return the function."""
    module_name, _, attr = entrypoint.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"job entrypoint {entrypoint!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"job entrypoint {entrypoint!r}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"job entrypoint {entrypoint!r}: {module_name} has no function {attr!r}")
    return function


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    job_args: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, job_args = args[:split], args[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m lichen.runtime.job_process")
    parser.add_argument("--memory-bytes", type=int, default=None)
    parser.add_argument("--cpu-cores", type=float, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("entrypoint")
    options = parser.parse_args(args)

    signal.signal(signal.SIGTERM, _on_sigterm)
    names = {"job": JOB_ENV, "run_id": RUN_ID_ENV}
    configure("info", static_fields={field: os.environ[name] for field, name in names.items() if os.environ.get(name)})
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        die_with_parent(options.parent_pid)
        apply_resources(options.memory_bytes, options.cpu_cores)
        function = resolve_entrypoint(options.entrypoint)
        result = function(job_args)
    except JobTerminated:
        log.warning("job_terminated", signal="SIGTERM", outputs="partial outputs were discarded")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        log.warning("job_interrupted", outputs="partial outputs were discarded")
        return EXIT_INTERRUPTED
    except LichenError as exc:
        log.error("job_failed", error=str(exc), exit_code=exc.exit_code,
                  exc_info=exc if os.environ.get("LICHEN_DEBUG") == "1" else None)
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        log.error("job_exited", error=str(code), exit_code=1)
        return 1
    if result is None:
        return 0
    if isinstance(result, bool) or not isinstance(result, int):
        log.error("job_failed", error=f"returned {result!r}; expected an int exit code or None", exit_code=1)
        return 1
    return result


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main())
