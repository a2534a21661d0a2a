"""Status during a rollout counts ready replicas per revision, and tables print whole when piped."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from lichen.cli.inspecting import service_rows, status_view
from lichen.cli.output import UNBOUNDED_WIDTH, WholeLinesConsole
from lichen.runtime.reporting import revision_counts


def _record(revision: str, published: bool, index: int) -> SimpleNamespace:
    return SimpleNamespace(revision=revision, published=published, created_index=index)


def test_revision_counts_put_the_current_revision_first_even_without_replicas() -> None:
    records = [_record("old1", True, 0), _record("old1", True, 1), _record("new2", False, 2)]
    assert revision_counts("new2", records) == [
        {"revision": "new2", "current": True, "replicas": 1, "ready": 0},
        {"revision": "old1", "current": False, "replicas": 2, "ready": 2},
    ]
    assert revision_counts("new3", []) == [{"revision": "new3", "current": True, "replicas": 0, "ready": 0}]


def test_a_stuck_rollout_shows_zero_new_replicas_ready_and_the_old_revision_apart() -> None:
    service = {"revision": "new2", "desired": 2, "ready": 2, "rollout": {"status": "progressing", "reason": ""},
               "conditions": [], "revisions": revision_counts("new2", [_record("old1", True, 0),
                                                                      _record("old1", True, 1),
                                                                      _record("new2", False, 2)])}
    assert service_rows("api", service) == [["api", "new2", "0/2", "progressing"],
                                            ["", "old1", "old: 2 ready of 2", ""]]



def test_a_canary_shows_its_weight_beside_the_stable_revision() -> None:
    service = {"revision": "b2", "desired": 2, "ready": 1, "rollout": None, "conditions": [],
               "canary": {"stable": "a1", "weight": 10, "replicas": 1, "paused": True},
               "revisions": revision_counts("b2", [_record("a1", True, 0), _record("a1", True, 1),
                                                   _record("b2", True, 2)])}
    assert service_rows("api", service) == [["api", "b2", "1/1", "canary 10% beside a1 (paused)"],
                                            ["", "a1", "old: 2 ready of 2", ""]]


STATE = {
    "app_dir": "/srv/" + "deeply/nested/" * 8 + "feedback-app",
    "services": {"feedback": {"revision": "dd0123456789", "desired": 1, "ready": 1, "rollout": None, "conditions": [],
                              "revisions": [{"revision": "dd0123456789", "current": True, "replicas": 1, "ready": 1}]}},
    "replicas": [{"id": "feedback-dd012-0", "service": "feedback", "revision": "dd0123456789", "state": "Ready",
                  "pid": 4242, "port": 51234, "restarts": 0, "last_exit_code": None, "last_exit_reason": None,
                  "uptime_s": 12.0, "restart_in_s": None}],
    "gateway": None,
}


def test_tables_are_not_cut_when_stdout_is_a_pipe() -> None:
    code = ("import json, sys; from lichen.cli.output import console; from lichen.cli.inspecting import status_view; "
            "console.print(status_view(json.loads(sys.stdin.read())))")
    import json

    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(STATE), capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "40"}, timeout=60, check=True).stdout
    assert STATE["app_dir"] in out  # the title, whole on one line
    assert "feedback-dd012-0" in out and "dd0123456789" in out and "…" not in out


def test_a_terminal_still_gets_its_width() -> None:
    from io import StringIO

    narrow = WholeLinesConsole(file=StringIO(), force_terminal=True, width=40)
    narrow.print(status_view(STATE))
    assert "…" in narrow.file.getvalue()
    piped = WholeLinesConsole(file=StringIO())
    assert piped.width == UNBOUNDED_WIDTH
