"""Replica log files: merging by "ts" (lichen logs) and pruning by the rotation rule (the controller)."""

from __future__ import annotations

import os
from pathlib import Path

from lichen.runtime.replica_logs import is_replica_of, merge_by_time, prune_replica_logs, replica_logs_on_disk
from lichen.runtime.workspaces import Workspace


def _line(ts: str, event: str) -> str:
    return f'{{"ts":"2026-12-02T18:44:{ts}Z","level":"info","event":"{event}"}}'


def test_lines_merge_by_timestamp_and_plain_lines_stay_with_their_file() -> None:
    a = "\n".join([_line("01.000", "a1"), "Traceback (most recent call last):", "  boom", _line("04.000", "a4")])
    b = "\n".join([_line("02.000", "b2"), _line("03.500", "b3"), _line("05.000", "b5")])
    merged = merge_by_time({"api-aaaaa-1": a, "api-bbbbb-0": b})
    assert [(r[-1], line.split('"event":"')[-1][:2] if line.startswith("{") else line.strip()[:5])
            for r, line in merged] == [
        ("1", "a1"), ("1", "Trace"), ("1", "boom"), ("0", "b2"), ("0", "b3"), ("1", "a4"), ("0", "b5")]


def test_an_earlier_ts_later_in_a_file_keeps_its_place() -> None:
    a = "\n".join([_line("05.000", "a5"), _line("01.000", "a1")])  # out of order in its own file
    b = _line("03.000", "b3")
    merged = [line for _, line in merge_by_time({"x-aaaaa-0": a, "x-bbbbb-0": b})]
    assert [m.split('"event":"')[1][:2] for m in merged] == ["b3", "a5", "a1"]


def test_replica_names_belong_to_one_service_only() -> None:
    assert is_replica_of("api-3f2a1-0", "api")
    assert not is_replica_of("api-v2-3f2a1-0", "api") and not is_replica_of("api", "api")


def test_prune_removes_old_stopped_logs_with_their_rotated_copies(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.logs.mkdir(parents=True)
    for n in range(4):
        path = workspace.log_path(f"api-aaaaa-{n}")
        path.write_text("x\n")
        os.utime(path, (1000.0 + n, 1000.0 + n))
    workspace.log_path("api-aaaaa-0").with_name("api-aaaaa-0.log.1").write_text("old\n")
    (workspace.logs / "gateway.log").write_text("kept\n")
    (workspace.logs / "api-v2-bbbbb-0.log").write_text("another service\n")
    removed = prune_replica_logs(workspace, ["api"], live=["api-aaaaa-3"], keep_dead=1)
    assert removed == ["api-aaaaa-0", "api-aaaaa-1"]
    assert sorted(p.name for p in workspace.logs.iterdir()) == [
        "api-aaaaa-2.log", "api-aaaaa-3.log", "api-v2-bbbbb-0.log", "gateway.log"]
    assert set(replica_logs_on_disk(workspace, "api")) == {"api-aaaaa-2", "api-aaaaa-3"}
