"""Ingest speed: the streaming block reader (pyarrow's CSV parser, vectorised checks, line-by-line
only for a block with a bad row) against the reader of an earlier commit (every line parsed in
Python), on the same MovieLens-format ratings.csv, in one run. Each side runs in its own process,
so its peak memory (max RSS) is its own.

    .venv/bin/python bench/recsys_ingest.py                        # 2M rows, against b5be944
    .venv/bin/python bench/recsys_ingest.py --rows 20000000 --json
    .venv/bin/python bench/recsys_ingest.py --bad-every 1000       # a bad row every 1,000 lines

The file is synthetic (recsys.synthesizing.synthesize_at_scale, ML-20M's users:items:ratings
proportions) with half-star ratings and a header, as ``ml-latest-small``/ML-20M's ratings.csv.
Both sides read it and remove duplicates (read_ratings + deduplicate): what the ingest job does
before writing the dataset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "recsys"))

ML20M = (138_493, 27_278, 20_000_263)  # users, items, ratings

MEASURE = r"""
import importlib.util, json, resource, sys, time
sys.path.insert(0, {app!r})
spec = importlib.util.spec_from_file_location("ingesting_under_test", {module!r})
ingesting = sys.modules["ingesting_under_test"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ingesting)
started = time.perf_counter()
table = ingesting.read_ratings({data!r}, rating_range=(0.5, 5.0))
read_s = time.perf_counter() - started
data, duplicates = ingesting.deduplicate(table)
total_s = time.perf_counter() - started
print(json.dumps({{"read_s": read_s, "total_s": total_s, "rows": len(data), "bad_rows": len(table.bad_rows),
                   "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def write_data(path: Path, rows: int, bad_every: int) -> int:
    from recsys.synthesizing import synthesize_at_scale, write_ratings_csv

    users, items, ratings = ML20M
    scale = rows / ratings
    data = synthesize_at_scale(max(10, int(users * scale)), max(100, int(items * min(1.0, scale ** 0.5))), rows,
                               seed=0)
    write_ratings_csv(data, path)
    if bad_every:
        lines = path.read_text().splitlines()
        for index in range(bad_every, len(lines), bad_every):
            lines[index] = lines[index].replace(",", ",x", 1)  # an item id that is not a number
        path.write_text("\n".join(lines) + "\n")
    return len(data)


def measure(module: Path, data: Path) -> dict:
    code = MEASURE.format(app=str(ROOT / "examples" / "recsys"), module=str(module), data=str(data))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reading with {module} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--baseline", default="b5be944", help="git revision whose ingesting.py is the 'before'")
    parser.add_argument("--bad-every", type=int, default=0, help="make every Nth line bad (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-ingest-") as scratch:
        scratch = Path(scratch)
        data = scratch / "ratings.csv"
        rows = write_data(data, args.rows, args.bad_every)
        before_module = scratch / "ingesting_before.py"
        before_module.write_text(subprocess.run(
            ["git", "show", f"{args.baseline}:examples/recsys/recsys/ingesting.py"], cwd=ROOT, capture_output=True,
            text=True, check=True).stdout)
        before = measure(before_module, data)
        after = measure(ROOT / "examples" / "recsys" / "recsys" / "ingesting.py", data)
    if before["rows"] != after["rows"] or before["bad_rows"] != after["bad_rows"]:
        raise SystemExit(f"the two readers disagree: {before} vs {after}")
    result = {"rows": rows, "bad_every": args.bad_every, "baseline": args.baseline,
              "before": before, "after": after, "speedup": before["total_s"] / after["total_s"],
              "memory_ratio": after["max_rss_mib"] / before["max_rss_mib"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest of a {rows:,}-row ratings.csv (read + deduplicate)"
                        + (f", a bad row every {args.bad_every:,} lines" if args.bad_every else ""))
    for column in ("", f"before ({args.baseline})", "after", "after / before"):
        table.add_column(column, justify="right" if column else "left")
    per_million = [side["total_s"] / rows * 1e6 for side in (before, after)]
    table.add_row("s per million rows", f"{per_million[0]:.2f}", f"{per_million[1]:.2f}",
                  f"{per_million[1] / per_million[0]:.3f} ({result['speedup']:.1f}x faster)")
    table.add_row("read s", f"{before['read_s']:.2f}", f"{after['read_s']:.2f}",
                  f"{after['read_s'] / before['read_s']:.3f}")
    table.add_row("peak RSS MiB", f"{before['max_rss_mib']:.0f}", f"{after['max_rss_mib']:.0f}",
                  f"{result['memory_ratio']:.2f}")
    table.add_row("rows kept / bad", f"{before['rows']:,} / {before['bad_rows']:,}",
                  f"{after['rows']:,} / {after['bad_rows']:,}", "same")
    Console().print(table)


if __name__ == "__main__":
    main()
