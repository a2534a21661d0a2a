"""Bad autoscale values are located validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lichen.spec.loading import validate_spec

BASE = "app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n"


@pytest.mark.parametrize(("block", "field", "message"), [
    ("    autoscale: {min: 3, max: 2}\n", "services.api.autoscale.max", "must be >= min (3)"),
    ("    autoscale: {panic_window_s: 90}\n", "services.api.autoscale.panic_window_s",
     "must be <= stable_window_s (60)"),
    ("    autoscale: {stable_window_s: -5}\n", "services.api.autoscale.stable_window_s", ""),
    ("    autoscale: {interval_s: 0}\n", "services.api.autoscale.interval_s", "must be > 0"),
    ("    autoscale: {max_scale_up_rate: 1}\n", "services.api.autoscale.max_scale_up_rate", ""),
    ("    timeout_s: 1\n    autoscale: {metric: latency_p95_ms, target: 1000}\n", "services.api.autoscale.target",
     "a p95 of 1000 ms can never be measured"),
    ("    resources: {cpu: 500m}\n    autoscale: {metric: cpu, target: 1}\n", "services.api.autoscale.target",
     "resources.cpu limits each replica to 0.5"),
])
def test_bad_autoscale_values_are_located_errors(tmp_path: Path, block: str, field: str, message: str) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text(BASE + block)
    issues = [i for i in validate_spec(path, check_imports=False) if i.severity == "error"]
    assert [i.field for i in issues] == [field], [str(i) for i in issues]
    assert message in issues[0].message and issues[0].line >= 5


def test_good_autoscale_values_pass(tmp_path: Path) -> None:
    path = tmp_path / "lichen.yaml"
    path.write_text(BASE + "    autoscale: {min: 0, max: 8, metric: rps, target: 50, panic_window_s: 3, "
                           "tolerance: 0.2}\n")
    assert [i for i in validate_spec(path, check_imports=False) if i.severity == "error"] == []
