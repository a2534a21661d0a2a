"""lichen.spec.editing: `lichen advise --apply`'s edits keep every comment, style and line nobody changed."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from lichen.spec.editing import EditError, set_values
from lichen.spec.loading import load_spec

RECSYS = Path(__file__).resolve().parents[3] / "examples" / "recsys" / "lichen.yaml"


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]


def test_the_recsys_spec_round_trips_byte_for_byte_and_changes_only_what_was_asked(tmp_path: Path) -> None:
    text = RECSYS.read_text()
    assert set_values(text, []) == text
    after = set_values(text, [(("services", "recommender", "resources", "cpu"), 0.15),
                              (("services", "recommender", "resources", "memory"), "160Mi"),
                              (("services", "recommender", "replicas"), 3),
                              (("services", "events", "probes", "readiness", "period_s"), 2)])
    assert sorted(changed_lines(text, after)) == sorted([
        "-     replicas: 2", "-     resources: {cpu: 0.5, memory: 1Gi}",
        "+     replicas: 3", "+     resources: {cpu: 0.15, memory: 160Mi}",
        "+     probes:", "+       readiness:", "+         period_s: 2"])
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in after.splitlines() for c in comments)
    assert '"0 3 * * *"' in after and 'MODEL_POLL_S: "1"' in after and "receivers: [{log: true}]" in after
    (tmp_path / "lichen.yaml").write_text(after)
    spec = load_spec(tmp_path / "lichen.yaml")
    assert spec.services["recommender"].resources.cpu == 0.15 and spec.services["events"].probes.readiness.period_s == 2


def test_a_new_key_goes_before_the_comments_that_followed_its_mapping() -> None:
    text = ("app: x\nservices:\n  a:\n    entrypoint: m:A   # the thing\n    # about b\n"
            "  b: {entrypoint: m:B}\n\n  c:\n    entrypoint: m:C\n    resources:\n      # none yet\n")
    after = set_values(text, [(("services", "a", "resources", "cpu"), 0.1), (("services", "b", "replicas"), 2),
                              (("services", "c", "resources", "cpu"), 0.5)])
    assert after == ("app: x\nservices:\n  a:\n    entrypoint: m:A   # the thing\n    resources:\n      cpu: 0.1\n"
                     "    # about b\n  b: {entrypoint: m:B, replicas: 2}\n\n  c:\n    entrypoint: m:C\n"
                     "    resources:\n      cpu: 0.5\n      # none yet\n")


def test_block_sequences_keep_their_indentation() -> None:
    text = "app: x\nservices:\n  a:\n    entrypoint: m:A\n    routes:\n      - /x\n      - /y\n    replicas: 1\n"
    assert set_values(text, [(("services", "a", "replicas"), 2)]) == text.replace("replicas: 1", "replicas: 2")


@pytest.mark.parametrize(("text", "path", "message"), [
    ("app: x\nservices: [a, b]\n", ("services", "a", "replicas"), "services is not a mapping"),
    ("- a\n- b\n", ("app",), "not a mapping"),
    ("app: [unclosed\n", ("app",), "cannot read the YAML"),
])
def test_what_cannot_be_edited_is_refused_naming_why(text: str, path: tuple, message: str) -> None:
    with pytest.raises(EditError, match=message):
        set_values(text, [(path, 1)])


SERVICE = ("app: x\nservices:\n  api:\n    entrypoint: m:A\n    replicas: 4   \n    timeout_s: 10\n"
           "    routes: [{prefix: /x}]\n    resources: {cpu: 1, memory: 1Gi}\n")


def test_a_change_next_to_a_line_ruamel_respells_keeps_every_other_line() -> None:
    # ruamel.yaml writes `routes: [prefix: /x]` and drops trailing blanks; neither may cost a line
    after = set_values(SERVICE, [(("services", "api", "replicas"), 2), (("services", "api", "resources", "cpu"), 0.5)])
    assert after == SERVICE.replace("replicas: 4   ", "replicas: 2").replace("cpu: 1,", "cpu: 0.5,")


def test_crlf_endings_and_a_missing_final_newline_are_kept() -> None:
    crlf = SERVICE.replace("\n", "\r\n")
    assert set_values(crlf, [(("services", "api", "timeout_s"), 5)]) == crlf.replace("timeout_s: 10", "timeout_s: 5")
    bare = SERVICE.rstrip("\n")
    assert set_values(bare, [(("services", "api", "max_concurrency"), 8)]) == bare + "\n    max_concurrency: 8"


@pytest.mark.parametrize(("text", "path", "shared"), [
    ("app: x\nx-res: &res {cpu: 1}\nservices:\n  api:\n    entrypoint: m:A\n    resources: *res\n"
     "  web:\n    entrypoint: m:B\n    resources: *res\n", ("services", "api", "resources", "cpu"),
     "services.web.resources.cpu"),
    ("app: x\nx-base: &base\n  resources: {cpu: 1}\nservices:\n  api:\n    <<: *base\n    entrypoint: m:A\n",
     ("services", "api", "resources", "cpu"), "x-base.resources.cpu"),
])
def test_a_value_shared_through_an_anchor_is_refused_naming_what_else_would_change(text: str, path: tuple,
                                                                                   shared: str) -> None:
    with pytest.raises(EditError, match=f"would also change {shared}"):
        set_values(text, [(path, 0.5)])


def test_a_key_over_a_merge_key_is_set_on_the_service_alone() -> None:
    text = "app: x\nx-base: &base\n  replicas: 2\nservices:\n  api:\n    <<: *base\n    entrypoint: m:A\n"
    assert set_values(text, [(("services", "api", "replicas"), 3)]) == text + "    replicas: 3\n"
