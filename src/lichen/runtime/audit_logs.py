"""The audit log: ``.lichen/audit.log``, one hash-chained JSON line per change (:mod:`lichen.control.audit_chains`).

Who appends: the control API after every mutating call (allowed or not), and
the CLI verbs that change state without the API (tokens, keys, secrets,
silences, models, runs, deploys). Both may write at once, so an append takes
an exclusive ``flock`` on the log, reads the chain's head from the last line,
writes one line with one ``write`` and ``fsync``s it. The file is opened
``O_APPEND`` and never rewritten: a damaged log is reported by ``lichen audit
verify``, and appends go on after the damage.

``audit.head`` beside the log holds the last ``seq`` and ``hash``, so records
cut off the end are detected too; if an append finds the log shorter than
its head, it first seals an ``audit.gap`` record, so the gap stays in the
chain even after the head moves on.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lichen.control.audit_chains import ChainReport, Head, head_after, seal, verify_chain
from lichen.errors import StateError
from lichen.logs import is_secret_field
from lichen.runtime.workspaces import atomic_write

REDACTED = "[redacted]"
MAX_PARAM_CHARS = 512


def _tail_line(fd: int) -> bytes | None:
    """The last line of the file behind ``fd`` (with its newline), read backwards in blocks."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    end = size
    chunk = b""
    while end > 0:
        start = max(0, end - 4096)
        chunk = os.pread(fd, end - start, start) + chunk
        cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
        if cut >= 0:
            return chunk[cut + 1:]
        end = start
    return chunk


def clean_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters fit to record: secret-looking names redacted, long values cut."""
    cleaned: dict[str, Any] = {}
    for name, value in params.items():
        if is_secret_field(name):
            cleaned[name] = REDACTED
        elif isinstance(value, (int, float, bool)) or value is None:
            cleaned[name] = value
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
            cleaned[name] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS] + "..."
    return cleaned


class AuditLog:
    """One app's audit log file and its head file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name.removesuffix(".log") + ".head")

    def append(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Seal ``fields`` (plus ``ts``) as the next record and write it; the record written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the audit log: {exc.strerror}", where=str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            head = head_after(_tail_line(fd))
            if head is None:  # a damaged last line: the whole chain tells where it goes on
                with open(self.path, "rb") as handle:
                    head = verify_chain(handle).head
            recorded = self.recorded_head()
            if recorded is not None and (recorded.seq > head.seq or (recorded.seq == head.seq
                                                                     and recorded.hash != head.hash)):
                gap = seal({"ts": time.time(), "actor": "lichen", "action": "audit.gap", "result": "error",
                            "detail": f"the log ended at seq {head.seq - 1} but its head said seq "
                                      f"{recorded.seq - 1} (hash {recorded.hash[:16]}): records were removed"},
                           head.seq, head.hash)
                os.write(fd, (json.dumps(gap, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode())
                head = Head(gap["seq"] + 1, gap["hash"])
            record = seal({"ts": time.time(), **fields}, head.seq, head.hash)
            os.write(fd, (json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
            self._write_head(Head(record["seq"] + 1, record["hash"]))
            return record
        except OSError as exc:
            raise StateError(f"cannot append to the audit log: {exc.strerror}", where=str(self.path)) from None
        finally:
            os.close(fd)  # releases the lock

    def _write_head(self, head: Head) -> None:
        atomic_write(self.head_path, json.dumps({"seq": head.seq, "hash": head.hash}) + "\n", mode=0o600)

    def recorded_head(self) -> Head | None:
        """The head written by the last append; None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.head_path.read_text())
            return Head(int(data["seq"]), str(data["hash"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextlib.contextmanager
    def _lines(self) -> Iterator[Iterator[bytes]]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            yield iter(())
            return
        except OSError as exc:
            raise StateError(f"cannot read the audit log: {exc.strerror}", where=str(self.path)) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # an append in progress finishes first
            yield iter(handle)

    def verify(self) -> ChainReport:
        with self._lines() as lines:
            return verify_chain(lines, self.recorded_head())

    def records(self) -> list[tuple[int, dict[str, Any] | None]]:
        """Every line as ``(line number, record)``; a line that is not JSON gives None."""
        out: list[tuple[int, dict[str, Any] | None]] = []
        with self._lines() as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                out.append((number, record if isinstance(record, dict) else None))
        return out


def local_actor() -> str:
    """The actor recorded for a CLI action on this machine: ``local:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"local:{user}"


def record_cli_action(root: Path, action: str, params: Mapping[str, Any], result: str = "ok",
                      detail: str = "") -> None:
    """Append a CLI action to ``root``/audit.log (``root``: the app's ``.lichen`` directory)."""
    fields: dict[str, Any] = {"actor": local_actor(), "role": "local", "source": "cli", "action": action,
                              "params": clean_params(params), "result": result}
    if detail:
        fields["detail"] = detail
    AuditLog(root / "audit.log").append(fields)


@contextlib.contextmanager
def audited(root: Path, action: str, params: Mapping[str, Any], record_success: bool = True) -> Iterator[None]:
    """Record a CLI action with its result: ``ok``, or ``error`` and the message when the block raises
    (``record_success=False``: the caller records the outcome itself when the block returns)."""
    try:
        yield
    except KeyboardInterrupt:
        record_cli_action(root, action, params, "interrupted")
        raise
    except Exception as exc:
        record_cli_action(root, action, params, "error", str(exc) or type(exc).__name__)
        raise
    if record_success:
        record_cli_action(root, action, params)
