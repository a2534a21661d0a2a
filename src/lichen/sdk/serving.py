"""Running one replica on uvicorn: the unit the control plane supervises.

SIGTERM makes the replica report not ready at once and keep serving for a
short drain window (``drain_s``, default 1 s), for requests a load balancer
routed here just before it dropped the replica. Then it stops accepting
connections, lets in-flight requests finish within the rest of ``grace_s``,
runs ``teardown()`` and exits 0. Ctrl+C (SIGINT) skips the window, and a
second Ctrl+C stops waiting; a repeated SIGTERM changes nothing. A
``setup()`` that raises makes it exit 1 with the error logged, so the
supervisor sees a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import disable_created_metrics

from lichen.errors import ConfigError
from lichen.logs import get_logger
from lichen.sdk.loading import load_target
from lichen.sdk.logs import configure_logging, uvicorn_log_config
from lichen.sdk.masking import mask_output
from lichen.sdk.settings import ReplicaSettings
from lichen.sdk.wrapping import ReplicaApp

log = get_logger("lichen.sdk")
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
        if self._signal is not None:
            # A second Ctrl+C stops waiting. A repeated SIGTERM (a supervisor that restarted and signals again)
            # changes nothing: the drain and the in-flight requests already have their deadlines.
            if sig == signal.SIGINT:
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
        if self._signal is not None:  # not ready, refusing new connections; in-flight requests get stop_s
            log.info("replica_stopping", signal=signal.Signals(self._signal).name,
                     drain_s=self.drain_s if self._drain_until is not None else 0.0,
                     stop_s=self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets=sockets)


def serve(
    target: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    app_dir: str | Path | None = None,
    grace_s: float | None = None,
    drain_s: float | None = None,
    log_level: str = "info",
) -> int:
    """Serve ``module:Class`` (or ``module:app``) until signalled; returns the exit code.

    ``port``, ``grace_s`` and ``drain_s`` override the replica contract read
    from the env (:meth:`ReplicaSettings.from_env`); ``None`` keeps its value.
    """
    settings = ReplicaSettings.from_env().overridden(port=port, grace_s=grace_s, drain_s=drain_s)
    mask_output(settings.secret_names, os.environ)  # before anything prints: its secrets are written as ***
    configure_logging(log_level, settings=settings, batched=True)
    disable_created_metrics()  # this process is the replica: no *_created series in /metrics
    drain = settings.drain_window_s
    stop_s = settings.grace_s - drain  # what in-flight requests get once the window closed
    replica = load_target(target, app_dir, settings)
    config = uvicorn.Config(
        replica,
        host=host,
        port=settings.port,
        lifespan="on",
        log_config=uvicorn_log_config(),
        log_level=log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(stop_s) if stop_s == int(stop_s) else stop_s,  # type: ignore[arg-type]
    )
    server = ReplicaServer(config, replica, drain_s=drain)
    listener = _listen(host, settings.port)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
            runner.run(server.serve(sockets=[listener]))
    except SystemExit as exc:  # uvicorn exits on bind or startup failure
        code = exc.code if isinstance(exc.code, int) else 1
        return code or 1
    code = server.exit_code
    log.info("replica_stopped", exit_code=code)
    _finish_handler_threads(replica, code)
    return code


def _loop_factory(config: uvicorn.Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvicorn's own choice of loop (``loop="auto"``: uvloop when it is installed), as ``uvicorn.run`` makes it."""
    get_loop_factory = getattr(config, "get_loop_factory", None)
    if get_loop_factory is not None:  # uvicorn >= 0.36
        return get_loop_factory()  # type: ignore[no-any-return]
    config.setup_event_loop()  # older uvicorn: installs uvloop's event loop policy
    return None


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
        log.warning("handler_threads_abandoned", reason="sync handlers still running after the grace period")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
