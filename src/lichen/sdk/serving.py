"""Running one replica on uvicorn: the unit the control plane supervises.

SIGTERM makes the replica report not ready at once and keep serving for a
short drain window (``drain_s``, default 1 s), for requests a load balancer
routed here just before it dropped the replica. Then it stops accepting
connections, lets in-flight requests finish within the rest of ``grace_s``,
runs ``teardown()`` and exits 0. Ctrl+C (SIGINT) skips the window, and a
second signal stops waiting. A ``setup()`` that raises makes it exit 1 with
the error logged, so the supervisor sees a crash.
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
import time
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
DEFAULT_DRAIN_S = 1.0
SETUP_FAILED_EXIT = 1


class ReplicaServer(uvicorn.Server):
    """uvicorn's server with Lichen's signal handling: drain, then exit 0 (uvicorn re-raises the signal)."""

    def __init__(self, config: uvicorn.Config, replica: ReplicaApp, drain_s: float = 0.0) -> None:
        super().__init__(config)
        self.replica = replica
        self.drain_s = drain_s
        self.exit_code = 0
        self._signal: int | None = None
        self._drain_until: float | None = None
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
        if self._signal is not None:  # a second signal: stop waiting
            self.should_exit = self.force_exit = True
            return
        self.replica.state.draining = True  # /readyz is 503 from the next probe on
        self._signal = sig
        if sig == signal.SIGTERM and self.drain_s > 0:
            self._drain_until = time.monotonic() + self.drain_s  # keep serving; on_tick ends the window
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.replica.state.refusing = True  # a request still arriving on a kept-alive connection gets 503
        if self._signal is not None:
            window = f" after a {self.drain_s:g} s drain window" if self._drain_until is not None else ""
            log.info(
                "stopping after %s%s: not ready, refusing new connections, in-flight requests get up to %g s",
                signal.Signals(self._signal).name,
                window,
                self.config.timeout_graceful_shutdown,
            )
        await super().shutdown(sockets=sockets)


def seconds_from_env(name: str, default: float) -> float:
    """A number of seconds >= 0 from the environment variable ``name``, or ``default`` when unset."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"must be a number of seconds, got {raw!r}", where=f"env {name}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"must be a finite number of seconds >= 0, got {raw!r}", where=f"env {name}")
    return value


def grace_from_env(default: float = DEFAULT_GRACE_S) -> float:
    """``LICHEN_GRACE_S`` (set by the supervisor from ``termination_grace_s``) or ``default``."""
    return seconds_from_env("LICHEN_GRACE_S", default)


def drain_window_s(drain_s: float, grace_s: float) -> float:
    """The drain window actually used: at most half the grace period, so in-flight requests keep the rest."""
    return max(0.0, min(drain_s, grace_s / 2))


def serve(
    target: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    app_dir: str | Path | None = None,
    grace_s: float | None = None,
    drain_s: float | None = None,
    log_level: str = "info",
) -> int:
    """Serve ``module:Class`` (or ``module:app``) until signalled; returns the exit code."""
    configure_logging(log_level)
    disable_created_metrics()  # this process is the replica: no *_created series in /metrics
    grace = grace_from_env() if grace_s is None else grace_s
    if not math.isfinite(grace) or grace < 0:
        raise ConfigError(f"must be a finite number of seconds >= 0, got {grace}", where="--grace-s")
    drain = seconds_from_env("LICHEN_DRAIN_S", DEFAULT_DRAIN_S) if drain_s is None else drain_s
    if not math.isfinite(drain) or drain < 0:
        raise ConfigError(f"must be a finite number of seconds >= 0, got {drain}", where="--drain-s")
    drain = drain_window_s(drain, grace)
    stop_s = grace - drain  # what in-flight requests get once the window closed
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
        timeout_graceful_shutdown=int(stop_s) if stop_s == int(stop_s) else stop_s,  # type: ignore[arg-type]
    )
    server = ReplicaServer(config, replica, drain_s=drain)
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
