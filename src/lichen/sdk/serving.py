"""Running one replica on uvicorn: the unit the control plane supervises.

SIGTERM (or Ctrl+C) makes the replica report not ready at once, stop
accepting connections, let in-flight requests finish within ``grace_s``,
run ``teardown()`` and exit 0. A ``setup()`` that raises makes it exit 1
with the error logged, so the supervisor sees a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import disable_created_metrics

from lichen.errors import ConfigError
from lichen.sdk.loading import load_target
from lichen.sdk.logs import configure_logging, uvicorn_log_config
from lichen.sdk.wrapping import ReplicaApp

log = logging.getLogger("lichen.sdk")
DEFAULT_GRACE_S = 30.0
SETUP_FAILED_EXIT = 1


class ReplicaServer(uvicorn.Server):
    """uvicorn's server with Lichen's signal handling: drain, then exit 0 (uvicorn re-raises the signal)."""

    def __init__(self, config: uvicorn.Config, replica: ReplicaApp) -> None:
        super().__init__(config)
        self.replica = replica
        self.exit_code = 0
        self._signal: int | None = None
        replica.on_setup_failed = self._setup_failed
        replica.defer_setup = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.replica.start_setup()  # listening now: /healthz answers while setup() runs

    def _setup_failed(self, exc: BaseException) -> None:
        self.exit_code = SETUP_FAILED_EXIT
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Only flags here: logging from a signal handler can re-enter a stream mid-write.
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting
            return
        self.replica.state.draining = True  # /readyz is 503 from the next probe on
        self._signal = sig
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._signal is not None:
            log.info(
                "draining after %s: not ready, refusing new connections, in-flight requests get up to %g s",
                signal.Signals(self._signal).name,
                self.config.timeout_graceful_shutdown,
            )
        await super().shutdown(sockets=sockets)


def grace_from_env(default: float = DEFAULT_GRACE_S) -> float:
    """``LICHEN_GRACE_S`` (set by the supervisor from ``termination_grace_s``) or ``default``."""
    raw = os.environ.get("LICHEN_GRACE_S", "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"must be a number of seconds, got {raw!r}", where="env LICHEN_GRACE_S") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"must be a finite number of seconds >= 0, got {raw!r}", where="env LICHEN_GRACE_S")
    return value


def serve(
    target: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    app_dir: str | Path | None = None,
    grace_s: float | None = None,
    log_level: str = "info",
) -> int:
    """Serve ``module:Class`` (or ``module:app``) until signalled; returns the exit code."""
    configure_logging(log_level)
    disable_created_metrics()  # this process is the replica: no *_created series in /metrics
    grace = grace_from_env() if grace_s is None else grace_s
    if not math.isfinite(grace) or grace < 0:
        raise ConfigError(f"must be a finite number of seconds >= 0, got {grace}", where="--grace-s")
    if not 0 <= port <= 65535:
        raise ConfigError(f"must be a TCP port from 1 to 65535 (0 picks a free one), got {port}", where="--port")
    replica = load_target(target, app_dir)
    config = uvicorn.Config(
        replica,
        host=host,
        port=port,
        lifespan="on",
        log_config=uvicorn_log_config(),
        log_level=log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(grace) if grace == int(grace) else grace,  # type: ignore[arg-type]
    )
    server = ReplicaServer(config, replica)
    listener = _listen(host, port)
    try:
        asyncio.run(server.serve(sockets=[listener]))
    except SystemExit as exc:  # uvicorn exits on bind or startup failure
        code = exc.code if isinstance(exc.code, int) else 1
        return code or 1
    code = server.exit_code
    log.info("replica stopped", extra={"exit_code": code})
    _finish_handler_threads(replica, code)
    return code


def _listen(host: str, port: int) -> socket.socket:
    """Bind the replica's socket up front so a taken port is one clear error, not a uvicorn exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and without it Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="--port") from None
    return sock


def _finish_handler_threads(replica: ReplicaApp, code: int) -> None:
    """Stop the handler pool; a sync handler stuck past the grace period must not keep the process alive."""
    executor = replica.executor
    if executor is None:
        return
    stopper = threading.Thread(target=executor.shutdown, kwargs={"wait": True, "cancel_futures": True}, daemon=True)
    stopper.start()
    stopper.join(timeout=1.0)
    if stopper.is_alive():
        log.warning("sync handler threads are still running after the grace period; exiting without them")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
