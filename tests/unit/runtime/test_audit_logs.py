"""The hash-chained audit log: sealing, every kind of tampering, the head, and appends from many processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from lichen.control.audit_chains import GENESIS, Head, seal, verify_chain
from lichen.runtime.audit_logs import AuditLog, audited, clean_params


def _log(tmp_path: Path, count: int) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(count):
        log.append({"actor": "a1", "action": "POST /v1/services/web/scale", "params": {"replicas": i}})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def test_a_sealed_chain_verifies_and_each_record_names_the_one_before() -> None:
    first = seal({"action": "x"}, 0, GENESIS)
    second = seal({"action": "y"}, 1, first["hash"])
    lines = [(json.dumps(r) + "\n").encode() for r in (first, second)]
    report = verify_chain(lines)
    assert report.intact and report.records == 2 and report.head == Head(2, second["hash"])
    assert second["prev"] == first["hash"] and first["hash"] != second["hash"]


def test_an_edited_record_is_found_by_its_line(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    lines = _lines(log)
    lines[2] = lines[2].replace('"replicas":2', '"replicas":7')
    log.path.write_text("".join(lines))
    report = log.verify()
    assert [n for n, _ in report.problems] == [3] and "edited" in report.problems[0][1]


def test_a_resealed_edit_still_breaks_the_next_link(tmp_path: Path) -> None:
    """Someone who recomputes the edited record's hash breaks the link from the record after it."""
    log = _log(tmp_path, 3)
    lines = _lines(log)
    record = json.loads(lines[1])
    record["params"]["replicas"] = 99
    lines[1] = json.dumps(seal(record, record["seq"], record["prev"])) + "\n"
    log.path.write_text("".join(lines))
    report = log.verify()
    assert report.problems and report.problems[0][0] == 3 and "chain is broken" in report.problems[0][1]


def test_a_deleted_record_in_the_middle_is_found(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    lines = _lines(log)
    del lines[1]
    log.path.write_text("".join(lines))
    problems = log.verify().problems
    assert problems[0][0] == 2 and "seq 2 where 1 was due" in problems[0][1]


def test_records_cut_off_the_end_are_found_by_the_head(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    log.path.write_text("".join(_lines(log)[:2]))
    report = log.verify()
    assert not report.intact and "cut off the end" in report.problems[-1][1]


def test_an_append_after_a_cut_seals_the_gap_into_the_chain(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    log.path.write_text("".join(_lines(log)[:2]))
    log.append({"actor": "a1", "action": "tokens.create"})
    records = [r for _, r in log.records()]
    assert [r["action"] for r in records][-2:] == ["audit.gap", "tokens.create"]
    assert "records were removed" in records[-2]["detail"]
    assert log.verify().intact  # the chain goes on, and the gap is in it for good


def test_a_line_that_is_not_json_is_reported_and_appends_go_on(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with log.path.open("a") as handle:
        handle.write("garbage written by hand\n")
    log.head_path.unlink()  # so only the damage itself is reported
    log.append({"actor": "a1", "action": "after"})
    report = log.verify()
    assert [n for n, _ in report.problems] == [3] and "not a JSON record" in report.problems[0][1]
    assert report.records == 3  # the records on both sides of the damage still verify


def test_the_file_is_private_and_secret_params_are_redacted(tmp_path: Path) -> None:
    log = _log(tmp_path, 1)
    assert log.path.stat().st_mode & 0o777 == 0o600
    assert clean_params({"password": "hunter2", "api_key": "k", "replicas": 3, "note": "x" * 600}) == {
        "password": "[redacted]", "api_key": "[redacted]", "replicas": 3, "note": "x" * 512 + "..."}


def test_audited_records_the_result_of_a_cli_action(tmp_path: Path) -> None:
    with audited(tmp_path, "keys.create", {"name": "mobile"}):
        pass
    try:
        with audited(tmp_path, "keys.revoke", {"id": "nope"}):
            raise ValueError("no API key with id 'nope'")
    except ValueError:
        pass
    records = [r for _, r in AuditLog(tmp_path / "audit.log").records()]
    assert [(r["action"], r["result"]) for r in records] == [("keys.create", "ok"), ("keys.revoke", "error")]
    assert records[1]["detail"] == "no API key with id 'nope'" and records[0]["actor"].startswith("local:")


def _append_many(path: str, who: str, count: int) -> None:
    log = AuditLog(path)
    for i in range(count):
        log.append({"actor": who, "action": "x", "params": {"i": i}})


def test_appends_from_several_processes_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.log")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, f"p{n}", 40)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    report = AuditLog(path).verify()
    assert report.intact and report.records == 160 and report.head.seq == 160
