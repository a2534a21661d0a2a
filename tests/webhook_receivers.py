"""A real webhook receiver on loopback for notification tests.

It records every POST with its arrival time, path and JSON body, and can go
down and come back on the same port (to test that deliveries are retried).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.records: list[tuple[float, str, dict[str, Any]]] = []  # (arrived_s, path, body)
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, _, body in self.records]

    @property
    def posts(self) -> list[tuple[str, dict[str, Any]]]:
        return [(path, body) for _, path, body in self.records]

    def received(self, alertname: str, status: str, after: int = 0) -> tuple[float, dict[str, Any]] | None:
        """The first notification (arrival time, body) at index >= ``after`` for ``alertname`` with ``status``."""
        for arrived, _, body in self.records[after:]:
            if body.get("status") == status and body.get("groupLabels", {}).get("alertname") == alertname:
                return arrived, body
        return None

    def start(self) -> None:
        records = self.records

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                records.append((time.time(), self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
