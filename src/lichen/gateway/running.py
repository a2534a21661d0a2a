"""The gateway process: listen, watch the config, key and certificate files, discover idempotent endpoints,
drain on SIGTERM.

Up to three listeners share one :class:`~lichen.gateway.proxying.Gateway`:
the main one on ``host:port`` (TLS when ``settings.tls`` is set), the
plaintext redirect listener on ``tls.redirect_http_port``
(:mod:`lichen.gateway.redirecting`), and the plaintext loopback listener on
``internal_port`` that ``lichen up`` asks for beside TLS, where the controller
probes and scrapes the gateway and replicas call each other.

The config file is re-read when its mtime or size changes (checked every
``reload_interval_s``) and at once on SIGHUP, which is how ``lichen up``
hands over a new table; ``GET /-/config`` answers the ``generation`` being
served, so a writer can confirm the new table is live. Every wait (the
reload interval, the drain on SIGTERM) goes through an injected
:class:`lichen.clocks.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any


from lichen.clocks import Clock, SystemClock
from lichen.errors import ConfigError, LichenError
from lichen.gateway.configs import GatewayConfig, load_config, redaction_of
from lichen.gateway.proxying import Gateway
from lichen.gateway.redirecting import Redirector
from lichen.gateway.serving import ClientConnection, sweep_deadlines
from lichen.gateway.tls import CertificateReloader
from lichen.logs import configure, get_logger, set_redaction

log = get_logger("lichen.gateway")

DRAIN_S = 10.0


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def _discover(gateway: Gateway, client: Any) -> None:
    """Ask one ready replica per service which POST endpoints are idempotent (``GET /.well-known/lichen``)."""
    import httpx  # imported once the gateway listens (see _watch)

    for name, table in gateway.tables.services.items():
        if not table.config.discover_idempotent or not table.ready:
            continue
        source = table.ready[0].endpoint.url
        if table.runtime.discovered_from == source:
            continue
        try:
            response = await client.get(f"{source}/.well-known/lichen")
            data = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            continue
        paths = {
            str(e.get("path")) for e in (data.get("endpoints") or [])
            if isinstance(e, dict) and e.get("idempotent") and str(e.get("method", "POST")).upper() not in ("GET", "HEAD")
        }
        table.runtime.discovered_idempotent = frozenset(paths)
        table.runtime.discovered_from = source
        if paths:
            log.info("discovered_idempotent", service=name, paths=sorted(paths))


class ConfigWatcher:
    """Reloads the gateway's config when the file changes (or on demand); a bad file keeps the last good one."""

    def __init__(self, gateway: Gateway, path: Path, certificates: CertificateReloader | None = None,
                 signature: tuple[int, int] | None = None) -> None:
        self.gateway, self.path = gateway, path
        self.certificates = certificates
        self.signature = signature if signature is not None else _signature(path)
        """the file as it was when the config being served was read (taken before reading it, so a change
        written meanwhile is still seen as one)"""

    def check(self, forced: bool = False) -> None:
        if self.certificates is not None:
            self.certificates.check(forced)
        current = _signature(self.path)
        if current is None or (current == self.signature and not forced):
            return
        self.signature = current
        try:
            config = load_config(self.path)
        except LichenError as exc:
            log.error("reload_failed", error=str(exc))
            return
        old = self.gateway.config
        if (config.host, config.port, config.internal_port) != (old.host, old.port, old.internal_port):
            log.warning("reload", warning="host/port changes need a restart")
        old_tls, tls = old.settings.tls, config.settings.tls
        if (old_tls is None) != (tls is None) or (tls and old_tls and tls.redirect_http_port != old_tls.redirect_http_port):
            log.warning("reload", warning="turning TLS on or off, or a new redirect_http_port, needs a restart")
        elif tls is not None and self.certificates is not None:
            self.certificates.configure(tls)
        try:
            set_redaction(redaction_of(config, self.path.resolve().parent))
        except LichenError as exc:  # the rest of the config applies; the last good redaction stays
            log.error("reload_failed", error=str(exc))
        self.gateway.apply(config)
        log.info("reloaded", routes=len(config.routes), services=len(config.services),
                 generation=config.generation or None, forced=forced)


def _refresh_keys(gateway: Gateway) -> None:
    if gateway.auth.keys.refresh():
        log.info("keys_reloaded", keys=len(gateway.auth.keys.keys))


def guarded(what: str, step: Callable[[], object]) -> None:
    """One step of the watch; an error it did not expect is logged (``watch_failed``), never the end of the
    watch: the config, keys and certificates are checked again at the next tick."""
    try:
        step()
    except Exception as exc:
        log.error("watch_failed", what=what, error=f"{type(exc).__name__}: {exc}"[:300])


async def _watch(gateway: Gateway, watcher: ConfigWatcher, clock: Clock) -> None:
    # httpx (and what it imports) loads here, after the gateway listens: a restarted gateway answers sooner
    import httpx

    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            await clock.sleep(gateway.config.reload_interval_s)
            guarded("config", watcher.check)
            guarded("keys", lambda: _refresh_keys(gateway))
            with contextlib.suppress(Exception):
                await _discover(gateway, client)


async def serve(config_path: Path, *, ready: asyncio.Event | None = None, clock: Clock | None = None) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish (up to 10 s) and exit."""
    clock = clock or SystemClock()
    loaded_signature = _signature(config_path)  # before the read: a write after it is a change to apply
    config = load_config(config_path)
    set_redaction(redaction_of(config, config_path.resolve().parent))  # every later line goes through it
    loop = asyncio.get_running_loop()
    base_dir = config_path.resolve().parent
    tls = config.settings.tls
    certificates = CertificateReloader(tls, base_dir) if tls is not None else None  # a bad pair stops it here
    gateway = Gateway(config, loop, base_dir=base_dir)
    servers, bound = [], {}

    async def listen(name: str, host: str, port: int, factory: Any, **tls_options: Any) -> None:
        try:
            server = await loop.create_server(factory, host, port, backlog=4096, reuse_address=True, **tls_options)
        except OSError as exc:
            for earlier in servers:
                earlier.close()
            raise ConfigError(f"cannot listen on {host}:{port} ({name}): {exc.strerror}", where=str(config_path)) from None
        servers.append(server)
        bound[name] = server.sockets[0].getsockname()[1]

    if certificates is not None:
        assert tls is not None
        await listen("port", config.host, config.port,
                     lambda: ClientConnection(gateway, gateway.connections, loop, https=True,
                                              response_headers=certificates.response_headers),
                     ssl=certificates.context, ssl_handshake_timeout=config.header_timeout_s)
        if tls.redirect_http_port is not None:
            redirector = Redirector(lambda: gateway.limits, bound["port"], config.host, gateway.metrics)
            await listen("redirect_port", config.host, tls.redirect_http_port,
                         lambda: ClientConnection(redirector, gateway.connections, loop))
    else:
        await listen("port", config.host, config.port, lambda: ClientConnection(gateway, gateway.connections, loop))
    if config.internal_port is not None:
        await listen("internal_port", "127.0.0.1", config.internal_port,
                     lambda: ClientConnection(gateway, gateway.connections, loop))
    port = bound["port"]
    # stdout carries one line a parent may parse for the bound ports; the log line says the same on stderr
    ports = {k: v for k, v in bound.items() if k != "port"}
    print(json.dumps({"event": "listening", "host": config.host, "port": port, "pid": os.getpid(),
                      "tls": certificates is not None, **ports}), flush=True)
    log.info("listening", host=config.host, port=port, pid=os.getpid(), tls=certificates is not None, **ports)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config_watcher = ConfigWatcher(gateway, config_path, certificates, loaded_signature)
    loop.add_signal_handler(signal.SIGHUP, guarded, "config", lambda: config_watcher.check(True))  # lichen up, kill -HUP
    watcher = loop.create_task(_watch(gateway, config_watcher, clock))
    sweeper = loop.create_task(sweep_deadlines(gateway.connections, loop))
    if ready is not None:
        ready.set()
    await stop.wait()
    for server in servers:
        server.close()
    gateway.websockets.close_all()  # a WebSocket has no request to finish: closed at once, not after the drain
    gateway.activator.stop()  # a request held for a service at zero is answered now, not after the drain
    await drain(gateway, clock, DRAIN_S)
    for conn in list(gateway.connections):
        if conn.transport is not None:
            conn.transport.close()
    await gateway.activator.aclose()
    await loop.run_in_executor(None, gateway.close)  # the spans still queued are flushed
    for task in (watcher, sweeper):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain(gateway: Gateway, clock: Clock, within_s: float, every_s: float = 0.05) -> bool:
    """Wait until no connection has a request in flight, at most ``within_s``; True when none has."""
    deadline = clock.now() + within_s
    while any(c.task is not None for c in gateway.connections):
        left_s = deadline - clock.now()
        if left_s <= 0:
            return False
        await clock.sleep(min(every_s, left_s))
    return True


def run_gateway(config_path: str | Path) -> None:
    """Blocking entry point for ``lichen gateway --config FILE`` (uvloop when available)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() handles it: a reload request must never kill us
    configure("info")  # one JSON event line per record on stderr, as the controller and replicas write
    logging.getLogger("httpx").setLevel(logging.WARNING)
    path = Path(config_path)
    load_config(path)  # fail fast with a one-line error
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(serve(path))


__all__ = ["GatewayConfig", "run_gateway", "serve"]
