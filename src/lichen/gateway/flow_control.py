"""Back-pressure between the two sockets of a proxied request, as one small object per connection.

Like uvicorn's ``flow_control.py``: the protocol tells its :class:`FlowControl`
when its transport's write buffer fills up (``pause_writing``) or drains
(``resume_writing``), and whoever is feeding that transport (the other side
of the proxy) is told to stop reading and to start again. A client that reads
a response slowly pauses reading from the replica; a replica that reads a
request body slowly pauses reading from the client. Nothing is buffered
without bound either way.
"""

from __future__ import annotations

from typing import Any


class FlowControl:
    __slots__ = ("transport", "reading_paused", "writing_paused", "closed", "_source")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.reading_paused = False
        self.writing_paused = False
        self.closed = False
        self._source: FlowControl | None = None

    # ------------------------------------------------------------ reading from this transport
    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------ writing to it (protocol callbacks)
    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._source is not None:
            self._source.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._source is not None:
            self._source.resume_reading()

    # ------------------------------------------------------------ coupling
    def feed_from(self, source: FlowControl | None) -> None:
        """While this transport cannot take more, ``source`` stops reading; ``None`` uncouples (whoever owns the
        source decides when it reads again)."""
        self._source = source
        if source is not None and self.writing_paused:
            source.pause_reading()
