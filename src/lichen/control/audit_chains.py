"""The audit log's hash chain: how a record is sealed and how a whole log is checked.

Each record is one JSON line. Its ``hash`` is SHA-256 over the previous
record's hash and the record's own canonical JSON (sorted keys, no spaces,
without ``hash``); its ``prev`` repeats the previous hash and its ``seq``
counts up from 0. So an edited line no longer matches its hash, a deleted or
reordered line breaks ``prev`` and ``seq``, and a line appended by hand
without the chain breaks at once. Cutting lines off the end leaves a valid
shorter chain: the head (last ``seq`` and ``hash``), kept beside the log and
printed by ``lichen audit verify``, catches that when compared with a copy
kept elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
"""the ``prev`` of the first record"""


def canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def seal(fields: Mapping[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """The record to append after a record whose hash is ``prev``: ``fields`` plus ``seq``, ``prev``, ``hash``."""
    record = {**{k: v for k, v in fields.items() if k not in ("seq", "prev", "hash")}, "seq": seq, "prev": prev}
    record["hash"] = hashlib.sha256(prev.encode() + b"\n" + canonical(record)).hexdigest()
    return record


def line_hash(raw: bytes) -> str:
    """What chains after a line that is not a sealed record (so appending goes on after damage)."""
    return hashlib.sha256(raw.rstrip(b"\n")).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain ends: the next ``seq`` and the hash the next record chains to."""

    seq: int = 0
    hash: str = GENESIS


def head_after(raw_last_line: bytes | None) -> Head | None:
    """The head after the log's last line (None: an empty log); None when that line is not a sealed record
    (then :func:`verify_chain` over the whole log gives the head, counting the damaged lines)."""
    if not raw_last_line:
        return Head()
    try:
        record = json.loads(raw_last_line)
        return Head(int(record["seq"]) + 1, str(record["hash"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class ChainReport:
    """What :func:`verify_chain` found: ``records`` checked, the ``head``, and each ``problems`` entry as
    ``(line number, message)``."""

    records: int = 0
    head: Head = field(default_factory=Head)
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(lines: Iterable[bytes], expected_head: Head | None = None) -> ChainReport:
    """Check every line of a log (raw bytes, one record each). ``expected_head``: the head recorded when the
    log was last appended to; a log that ends before it was cut short."""
    report = ChainReport()
    prev, seq = GENESIS, 0
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            report.problems.append((number, "incomplete last line (no newline): a torn write or an edit"))
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            stored = record.get("hash")
            claimed_seq = record.get("seq")
            claimed_prev = record.get("prev")
        except ValueError as exc:
            report.problems.append((number, f"not a JSON record ({exc})"))
            prev, seq = line_hash(raw), seq + 1
            continue
        if claimed_seq != seq:
            report.problems.append((number, f"seq {claimed_seq!r} where {seq} was due: a record was removed, "
                                            "inserted or reordered"))
        if claimed_prev != prev:
            report.problems.append((number, "prev does not match the hash of the record before it: the chain is "
                                            "broken here"))
        resealed = seal(record, claimed_seq if isinstance(claimed_seq, int) else seq, str(claimed_prev))
        if resealed["hash"] != stored:
            report.problems.append((number, "hash does not match the record's contents: the record was edited"))
        report.records += 1
        prev = str(stored)
        seq = (claimed_seq if isinstance(claimed_seq, int) else seq) + 1
    report.head = Head(seq, prev)
    if expected_head is not None and expected_head.seq > seq:
        report.problems.append((number, f"the log ends at seq {seq - 1} but was last written up to seq "
                                        f"{expected_head.seq - 1}: records were cut off the end"))
    elif expected_head is not None and expected_head.seq == seq and expected_head.hash != prev:
        report.problems.append((number, "the last record does not match the recorded head: it was replaced"))
    return report
