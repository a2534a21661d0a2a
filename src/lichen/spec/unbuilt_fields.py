"""Fields of ``lichen.yaml`` that are designed but not built yet: one table, one located warning per use.

The schema already has these fields, so a spec written today keeps working
when they are built. Until then, writing one gets a warning from ``lichen
validate`` and ``lichen up`` that says what happens instead, located at the
line that wrote it::

    lichen.yaml:9:17 jobs.nightly.schedule: warning: scheduled jobs are not built yet; the job runs only when
    `lichen run` starts it

One row per field. A row is deleted by the change that builds its field;
``tests/unit/spec/test_unbuilt_fields.py`` checks that the runtime reads
none of the fields listed here (so no row outlives its feature) and that
docs/spec.md marks each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lichen.errors import SpecIssue
from lichen.spec.documents import Document, PathKey, parse_document

ANY = "*"
"""a path part standing for every service or job name"""


@dataclass(frozen=True)
class UnbuiltField:
    path: tuple[str, ...]
    """the field, with ``*`` for a service or job name"""
    message: str
    """that it is not built, and what the runtime does instead"""
    built_for: Callable[[Any], bool] = lambda value: value is None
    """values that ask for nothing unbuilt (the default behaviour), which get no warning"""
    warn: bool = True
    """False: a field of a section that warns as a whole (its row still proves the field unread)"""

    @property
    def dotted(self) -> str:
        return ".".join("<name>" if part == ANY else part for part in self.path)


UNBUILT_FIELDS: tuple[UnbuiltField, ...] = ()
"""empty today: the last row, ``jobs.<name>.resources.gpu``, went when ``lichen run`` began granting jobs GPUs"""


def _walk(data: Any, path: tuple[str, ...], at: PathKey = ()) -> list[tuple[PathKey, Any]]:
    """Every (concrete path, value) the pattern ``path`` matches in ``data``."""
    if not path:
        return [(at, data)]
    if not isinstance(data, dict):
        return []
    head, rest = path[0], path[1:]
    if head == ANY:
        return [found for key, value in data.items() for found in _walk(value, rest, (*at, key))]
    if head not in data:
        return []
    return _walk(data[head], rest, (*at, head))


SCHEDULE_ONLY_FIELDS = ("concurrency_policy", "starting_deadline_s", "successful_runs_kept", "failed_runs_kept")


def unbuilt_field_warnings(doc: Document) -> list[SpecIssue]:
    """A located warning for each unbuilt field the document writes (with a value that asks for it)."""
    warnings = []
    for row in UNBUILT_FIELDS:
        if not row.warn:
            continue
        for path, value in _walk(doc.data, row.path):
            if row.built_for(value):
                continue
            warnings.append(doc.issue(path, row.message, severity="warning"))
    jobs = doc.data.get("jobs") if isinstance(doc.data, dict) else None
    for name, job in (jobs.items() if isinstance(jobs, dict) else ()):
        if not isinstance(job, dict) or job.get("schedule"):
            continue
        if job.get("carbon_aware") is not None:
            warnings.append(doc.issue(("jobs", name, "carbon_aware"), "carbon_aware delays only scheduled runs under "
                                      "`lichen up`; this job has no schedule, so `lichen run` starts it at once",
                                      severity="warning"))
        for field in SCHEDULE_ONLY_FIELDS:
            if field in job:
                warnings.append(doc.issue(("jobs", name, field), f"{field} applies to scheduled runs only; this job "
                                          "has no schedule, so nothing reads it", severity="warning"))
    return sorted(warnings, key=lambda w: (w.line, w.column, w.field))


def spec_warnings(path: str | Path) -> list[SpecIssue]:
    """The warnings of one spec file (none when it cannot be read or parsed: its errors say why)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    doc, _ = parse_document(text, str(path))
    if doc is None or not isinstance(doc.data, dict):
        return []
    return unbuilt_field_warnings(doc)
