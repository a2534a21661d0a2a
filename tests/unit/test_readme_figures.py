"""README figures match their sources: what can be counted is counted, and
measured figures are the ones the docs record for the named bench."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _rows(text: str, first_cells: tuple[str, ...]) -> dict[str, list[str]]:
    """Markdown table rows whose first cell is one of ``first_cells``: name -> the other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] in first_cells:
            rows[cells[0]] = cells[1:]
    return rows


def _numbers(cells: list[str]) -> list[str]:
    return [n for cell in cells for n in re.findall(r"\d+(?:\.\d+)?", cell)]


def test_conformance_file_count_is_the_one_ci_checks() -> None:
    stated = re.search(r"CI checks (\d+) of them", README)
    assert stated, "README no longer says how many promtool conformance files CI checks"
    assert int(stated.group(1)) == len(list((REPO / "tests" / "conformance").glob("*.yml")))


def test_recsys_quality_table_is_the_one_docs_record() -> None:
    docs = (REPO / "docs" / "recsys.md").read_text()
    models = ("Kernel ridge (NTK)", "EASE", "ALS (`implicit`)", "ItemKNN", "Popularity")
    readme_rows = _rows(README, models)
    assert set(readme_rows) == set(models)
    for model, cells in readme_rows.items():
        doc_row = next(line for line in docs.splitlines() if line.startswith(f"| {model} "))
        doc_means = re.findall(r"(\d\.\d{4})\**\s*±", doc_row)  # mean ± std over seeds in docs/recsys.md
        assert _numbers(cells) == doc_means, (model, cells, doc_row)


def test_ease_training_time_is_the_benchs_range() -> None:
    docs = (REPO / "docs" / "recsys.md").read_text()
    stated = re.search(r"EASE trains in (\d+\.\d+)–(\d+\.\d+) s", README)
    assert stated and "bench/recsys_training.py" in README[stated.start():stated.end() + 200]
    table = re.search(r"\| EASE \| [^|]+ \| (\d+\.\d+) s", docs)
    one_thread = re.search(r"EASE took (\d+\.\d+) s with one BLAS thread", docs)
    assert table and one_thread
    for said, recorded in ((stated.group(1), table.group(1)), (stated.group(2), one_thread.group(1))):
        assert abs(float(said) - float(recorded)) <= 0.0051, (said, recorded)  # rounded to 2 places


def test_gateway_table_figures_are_the_benchs_recorded_run() -> None:
    docs = (REPO / "docs" / "gateway.md").read_text()
    for workload, doc_name in (("trivial handler", "trivial"), ("2 ms CPU handler", "cpu_2ms")):
        cells = _rows(README, (workload,))[workload]
        nginx, lichen = int(cells[0]), int(cells[1])
        doc = {front: line for line in docs.splitlines() for front in ("nginx", "lichen")
               if line.startswith(f"| {doc_name} | {front} | {nginx if front == 'nginx' else lichen} |")}
        assert set(doc) == {"nginx", "lichen"}, f"{workload}: {nginx} / {lichen} req/s are not a run in docs/gateway.md"
        assert cells[2].startswith(f"{lichen / nginx:.2f}")
        cpu = [int(n) for n in re.findall(r"\d+", cells[4])]
        assert cpu == [int(doc["lichen"].split("|")[6]), int(doc["nginx"].split("|")[6])], (workload, cells[4])


def test_energy_overhead_figures_are_the_ones_docs_record() -> None:
    docs = (REPO / "docs" / "sustainability.md").read_text()
    stated = re.search(r"The meter costs ([\d.]+) ms of CPU per sample, ([\d.]+) % of the controller", README)
    assert stated, "README no longer states the energy meter's cost"
    per_sample_ms, share = stated.groups()
    assert f"{per_sample_ms} ms per sample" in docs and f"= {share} % of the controller's CPU" in docs


def test_carbon_planning_figures_are_the_ones_docs_record() -> None:
    docs = (REPO / "docs" / "sustainability.md").read_text()
    stated = re.search(r"Lichen's forecast from history\s+alone ([\d.]+) \(GB ([\d.]+), FR ([\d.]+), ES ([\d.]+), "
                       r"US-CAL-CISO ([\d.]+)\), against ([\d.]+)", README)
    assert stated, "README no longer states the carbon-planning benchmark"
    mean, gb, fr, es, ciso, yesterday = stated.groups()
    assert f"**{mean}** (target ≥ 0.70)" in docs and f"| {yesterday} |" in docs
    for region, figure in (("GB (wind)", gb), ("FR (nuclear)", fr), ("ES (solar and wind)", es),
                           ("US-CAL-CISO (solar)", ciso)):
        assert re.search(rf"\| {re.escape(region)} \| [^|]+ \| 1\.00 \| {figure} \|", docs), region
    per_region = [float(x) for x in (gb, fr, es, ciso)]
    assert abs(sum(per_region) / 4 - float(mean)) < 0.001, "the mean is the mean of the regions"


def test_gateway_tls_figure_is_the_one_docs_record() -> None:
    docs = (REPO / "docs" / "gateway.md").read_text()
    stated = re.search(r"Over TLS the gateway reaches (\d\.\d\d)× nginx's throughput \((\d+) / (\d+) req/s", README)
    assert stated, "README no longer states the TLS bench figure"
    ratio, lichen, nginx = stated.groups()
    rows = {front: cells for front, cells in
            (re.match(r"\| trivial over TLS \| (\w+) \| (\d+) \|", line).groups()  # type: ignore[union-attr]
             for line in docs.splitlines() if line.startswith("| trivial over TLS |"))}
    assert (rows["lichen"], rows["nginx"]) == (lichen, nginx)
    assert f"{int(lichen) / int(nginx):.2f}" == ratio
    assert f"{lichen} / {nginx} = {ratio}" in docs and "bench/gateway.py --tls" in README


def test_tracing_overhead_is_the_one_docs_gateway_records() -> None:
    stated = re.search(r"keeps (\d\.\d+)× its throughput \(([\d,]+) against ([\d,]+) req/s", README)
    assert stated, "README no longer states the tracing overhead"
    ratio, traced, off = stated.groups()
    rows = _rows((REPO / "docs" / "gateway.md").read_text(), ("tracing off",))
    full = next(line for line in (REPO / "docs" / "gateway.md").read_text().splitlines()
                if line.startswith("| on, `sampling_ratio: 1`"))
    assert rows["tracing off"][0] == off and f"| {traced} |" in full and f"**{ratio}**" in full
    assert abs(int(traced.replace(",", "")) / int(off.replace(",", "")) - float(ratio)) < 0.005


def test_fault_figures_are_the_ones_docs_reliability_records() -> None:
    stated = re.search(r"hung replica is detected in ([\d.]+) s, a killed gateway is\s+back in ([\d.]+) s, and a "
                       r"receiver down for 60 s loses (\d+) notifications", README)
    assert stated, "README no longer states the fault table's headline figures"
    detected, back, lost = stated.groups()
    rows = _rows((REPO / "docs" / "reliability.md").read_text(),
                 ("replica hang (SIGSTOP 10 s)", "gateway kill -9", "receiver down for 60 s"))
    assert rows["replica hang (SIGSTOP 10 s)"][0] == f"{detected} s"
    assert rows["gateway kill -9"][1] == f"{back} s"
    assert rows["receiver down for 60 s"][6].startswith(f"{lost} of ")
