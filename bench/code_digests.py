"""Per-service code digests (import closures) vs the old whole-directory digest, on examples/recsys.

Each `lichen up` on a running app digests the app's code to decide which
services roll. Before, one digest of every code file went into every
revision; now each service digests its entrypoint's import closure. This
prints, for the recsys example: the files each service's digest covers, the
time of one per-service digest, of all services' digests together (what the
controller computes, parsing each module once), and of the old whole-app
digest (best of the rounds, files in the page cache), with the ratios; and
which services an edit of each module would roll. "cold" parses every
module (a controller's first apply); "warm" finds the parsed imports of
unchanged modules in the in-process cache (a running controller's next
`lichen up` after an edit re-parses only the edited module).

    .venv/bin/python bench/code_digests.py [--app examples/recsys] [--rounds 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from lichen.control.import_closures import import_closures, imported_names
from lichen.runtime.digesting import service_digests
from lichen.runtime.workspaces import code_digest, code_files
from lichen.spec.loading import load_spec

REPO = Path(__file__).resolve().parents[1]


def best_ms(fn: Callable[[], object], rounds: int, cold: bool = True) -> float:
    times = []
    for _ in range(rounds):
        if cold:
            imported_names.cache_clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=REPO / "examples" / "recsys")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    app_dir = args.app.resolve()
    spec = load_spec(app_dir / "lichen.yaml")
    rules = spec.observability.rules

    files = code_files(app_dir, rules)
    py = {p: files[p] for p in files if p.endswith(".py")}
    closures = import_closures({n: s.entrypoint.partition(":")[0] for n, s in spec.services.items()}, py)
    whole_ms = best_ms(lambda: code_digest(app_dir, rules), args.rounds)
    all_ms = best_ms(lambda: service_digests(app_dir, spec, rules), args.rounds)
    warm_ms = best_ms(lambda: service_digests(app_dir, spec, rules), args.rounds, cold=False)
    print(f"{app_dir.name}: {len(files)} code files ({len(py)} modules), {len(spec.services)} services")
    print(f"{'service':<14}{'modules':>8}{'cold ms':>10}{'ratio to whole':>16}")
    for name in spec.services:
        one = spec.model_copy(update={"services": {name: spec.services[name]}})
        ms = best_ms(lambda one=one: service_digests(app_dir, one, rules), args.rounds)
        count = len(closures[name]) if closures[name] is not None else len(py)
        print(f"{name:<14}{count:>8}{ms:>10.2f}{ms / whole_ms:>15.2f}x")
    print(f"whole-directory digest (old, one for all):    {whole_ms:.2f} ms")
    print(f"all services' closure digests, cold (new):    {all_ms:.2f} ms  ({all_ms / whole_ms:.2f}x the old)")
    print(f"all services' closure digests, warm (new):    {warm_ms:.2f} ms  ({warm_ms / whole_ms:.2f}x the old)")
    print("an edit of ... rolls (new; the old digest rolled every service for every edit):")
    for path in sorted(py):
        rolled = [n for n, c in closures.items() if c is None or path in c]
        print(f"  {path:<32} {', '.join(rolled) or '(no service)'}")


if __name__ == "__main__":
    main()
