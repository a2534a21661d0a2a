"""Spec files as editors save them: encodings, BOMs, CRLF, extension fields, merges, Python callers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lichen.errors import ConfigError
from lichen.spec.loading import check_spec, load_spec
from lichen.spec.models import AppSpec

SERVICE = "services:\n  api:\n    entrypoint: app:Api\n"


def test_a_non_utf8_byte_is_located_by_line_and_column(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_bytes(b"app: shop\n" + SERVICE.encode() + b"    env: {A: \"caf\xe9\"}\n")
    _, issues = check_spec(spec, check_imports=False)
    assert [(i.line, i.column) for i in issues] == [(5, 18)]
    assert str(issues[0]).endswith("lichen.yaml:5:18 not UTF-8 text (byte 0xe9: invalid continuation byte); save the file as UTF-8")


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_text("app: shop\n", encoding="utf-16")
    _, issues = check_spec(spec, check_imports=False)
    assert len(issues) == 1 and "UTF-16" in issues[0].message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no spec file at"):
        check_spec(tmp_path / "lichen.yaml", check_imports=False)


def test_a_bom_and_crlf_line_ends_are_fine(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_bytes(("\ufeffapp: shop\r\n" + SERVICE.replace("\n", "\r\n") + "    replicas: -1\r\n").encode())
    _, issues = check_spec(spec, check_imports=False)
    assert [(i.line, i.column, i.field) for i in issues] == [(5, 5, "services.api.replicas")]


def test_x_extension_keys_hold_anchors_and_merges_apply(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_text(
        "app: shop\n"
        "x-defaults: &defaults\n  entrypoint: app:Api\n  replicas: 2\n  resources: {memory: 1e9}\n"
        "services:\n  api:\n    <<: *defaults\n  web:\n    <<: *defaults\n    replicas: 3\n"
    )
    loaded = load_spec(spec)
    assert loaded.services["api"].replicas == 2 and loaded.services["web"].replicas == 3
    assert loaded.services["web"].resources.memory == 10**9


def test_python_callers_get_the_same_number_rules() -> None:
    base = {"app": "shop", "services": {"api": {"entrypoint": "app:Api"}}}
    with pytest.raises(ValidationError, match="expected an integer, got true"):
        AppSpec.model_validate({**base, "services": {"api": {"entrypoint": "app:Api", "replicas": True}}})
    with pytest.raises(ValidationError, match="finite"):
        AppSpec.model_validate({**base, "sustainability": {"carbon_intensity_g_per_kwh": float("inf")}})
    # A boolean field still takes booleans.
    assert AppSpec.model_validate({**base, "gateway": {"auth": {"api_keys": True}}}).gateway.auth.api_keys


def test_a_block_with_everything_commented_out_means_its_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_text(
        "app: shop\n" + SERVICE + "    resources:\n    env:\n    routes:\n    probes: {liveness: null}\n"
        "    # autoscale: {min: 1}\n    autoscale:\n"
    )
    service = load_spec(spec).services["api"]
    assert service.env == {} and service.routes == [] and service.autoscale is None
    assert service.probes.liveness.path == "/healthz"


def test_keys_are_the_text_written_not_yaml_1_1_booleans_or_numbers(tmp_path: Path) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_text(
        "app: shop\nservices:\n  no:\n    entrypoint: app:Api\n"
        "    routes: [{prefix: /v2, headers: {x-version: 2}}]\n  123:\n    entrypoint: app:Api\n"
    )
    _, issues = check_spec(spec, check_imports=False)
    assert [(i.line, i.field) for i in issues] == [(6, "services.123")]
    assert "invalid key '123'" in issues[0].message
    spec.write_text("app: shop\nservices:\n  no:\n    entrypoint: app:Api\n    routes: [{prefix: /v2, headers: {x-v: 2}}]\n")
    loaded = load_spec(spec)
    assert list(loaded.services) == ["no"] and loaded.services["no"].routes[0].headers == {"x-v": "2"}


def test_a_long_depends_on_chain_is_checked_without_recursion(tmp_path: Path) -> None:
    count = 3000  # deeper than Python's default recursion limit
    lines = ["app: shop", "jobs:"]
    for i in range(count):
        after = f", depends_on: [j{i + 1}]" if i < count - 1 else ", depends_on: [j0]"
        lines.append(f"  j{i}: {{entrypoint: 'app:train'{after}}}")
    spec = tmp_path / "lichen.yaml"
    spec.write_text("\n".join(lines) + "\n")
    _, issues = check_spec(spec, check_imports=False)
    assert [(i.field, i.message.split(" -> ")[0]) for i in issues] == [("jobs.j0.depends_on[0]", "dependency cycle: j0")]
    spec.write_text("\n".join(lines[:-1] + [f"  j{count - 1}: {{entrypoint: 'app:train'}}"]) + "\n")
    assert check_spec(spec, check_imports=False)[1] == []


@pytest.mark.parametrize("depth", [200, 5000])
def test_absurd_nesting_is_one_located_issue_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    spec = tmp_path / "lichen.yaml"
    spec.write_text("app: shop\nservices: " + "[" * depth + "]" * depth + "\n")
    _, issues = check_spec(spec, check_imports=False)
    assert len(issues) == 1 and issues[0].line == 2 and "nested more than" in issues[0].message
