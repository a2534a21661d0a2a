"""`lichen energy`'s printing and argument errors (lichen.cli.energy), without a controller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lichen.cli.energy import band, report_lines

LICHEN = str(Path(sys.executable).with_name("lichen"))


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_a_band_is_shown_only_where_the_figure_has_one() -> None:
    assert band({"value": 12.34, "low": 9.1, "high": 15.8}, "J") == "12.3 J (9.1–15.8)"
    assert band({"value": 302.0, "low": 302.0, "high": 302.0}, "g/kWh") == "302 g/kWh"
    assert band(None, "J") == ""


def test_report_lines_name_every_source_idle_apart_the_cost_and_each_standing_problem() -> None:
    report = {
        "node": {"idle_j": {"value": 236.0, "low": 141.0, "high": 374.0}, "unattributed_j": None},
        "accounting_cost": {"cpu_s": 0.00586, "share_of_controller": 0.021},
        "meter": {"node_source": "model", "cpu": {"tdp_w": 8.0, "source": "codecarbon fallback"}, "gpu_source": None,
                  "pue": 1.2, "intensity_g_per_kwh": {"value": 475.0, "low": 332.5, "high": 617.5,
                                                      "source": "codecarbon world average"},
                  "problems": {"rapl": "/sys/class/powercap does not exist"},
                  "intensity_sources": [{"source": "api:watttime", "problem": "HTTP 401"},
                                        {"source": "codecarbon world average", "g_per_kwh": 475.0}]},
    }
    lines = report_lines(report)
    assert lines[0] == "node: model (CPU 8 W from codecarbon fallback); GPU: none; PUE 1.2"
    assert lines[1] == "idle (not spread over services): 236 J (141–374); unattributed (other processes): 0 J"
    assert lines[2] == "carbon intensity now: 475 g/kWh (332–618) from codecarbon world average"
    assert lines[3] == "accounting cost: 0.00586 CPU s, 2.1% of the controller's CPU"
    assert lines[4:] == ["rapl: /sys/class/powercap does not exist", "api:watttime: HTTP 401"]


@pytest.mark.parametrize(("window", "message"), [("abc", "--window"), ("500ms", "between 1s and 400d"),
                                                 ("1000d", "between 1s and 400d")])
def test_a_bad_window_is_one_located_error(tmp_path: Path, window: str, message: str) -> None:
    result = _lichen("energy", "--window", window, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_service_is_refused_naming_the_services(tmp_path: Path) -> None:
    (tmp_path / "lichen.yaml").write_text("app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n")
    result = _lichen("energy", "--service", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "no service named 'nope'" in result.stderr and "services: api" in result.stderr
