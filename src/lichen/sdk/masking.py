"""A replica's own secrets, written as ``***`` in everything it prints.

``lichen serve`` wraps ``sys.stdout`` and ``sys.stderr`` before it imports
the service, when the replica contract names the replica's secrets
(``LICHEN_SECRET_NAMES``): a ``print(os.environ["API_TOKEN"])``, a log line
or an uncaught exception's traceback that holds a secret's value reaches the
log file (``.lichen/logs/<replica>.log``, and so ``lichen logs``, a crash's
log tail in ``lichen status`` and events) as ``***``. The job runner does
the same for a job's output (:mod:`lichen.runtime.running_jobs`).

What it cannot see: bytes written to ``sys.stdout.buffer`` or straight to
file descriptor 1 or 2 (``os.write``, C extensions, child processes), and a
value split across two writes. Values shorter than 4 characters are not
masked (they would mask ordinary text).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

MASK = "***"
MIN_MASKED_CHARS = 4

__all__ = ["MASK", "MaskedStream", "mask_output", "masked_forms"]


def masked_forms(values: Iterable[str]) -> tuple[str, ...]:
    """Each value as it may be written: raw, and escaped inside a JSON string (a log line); longest first."""
    forms = set()
    for value in values:
        if len(value) < MIN_MASKED_CHARS:
            continue
        forms.add(value)
        forms.add(json.dumps(value)[1:-1])
        forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return tuple(sorted(forms, key=len, reverse=True))


class MaskedStream:
    """A text stream that writes ``***`` for each of ``forms``; every other attribute is the stream's own."""

    def __init__(self, stream: TextIO, forms: tuple[str, ...]) -> None:
        self._stream = stream
        self._forms = forms

    def write(self, text: str) -> int:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return self._stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def mask_output(names: Iterable[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Wrap ``sys.stdout`` and ``sys.stderr`` so the values of the variables ``names`` are written as ``***``.

    Returns the masked forms (none: nothing is wrapped).
    """
    forms = masked_forms(environ[name] for name in (names or ()) if environ.get(name))
    if forms:
        for attr in ("stdout", "stderr"):
            stream = getattr(sys, attr)
            if stream is not None and not isinstance(stream, MaskedStream):
                setattr(sys, attr, MaskedStream(stream, forms))
    return forms
