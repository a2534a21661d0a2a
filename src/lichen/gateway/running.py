"""The gateway process: listen, watch the config and key files, discover idempotent endpoints, drain on SIGTERM.

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
from pathlib import Path

import httpx

from lichen.clocks import Clock, SystemClock
from lichen.errors import ConfigError, LichenError
from lichen.gateway.configs import GatewayConfig, load_config
from lichen.gateway.proxying import Gateway
from lichen.gateway.serving import ClientConnection, sweep_deadlines
from lichen.logs import configure, get_logger

log = get_logger("lichen.gateway")

DRAIN_S = 10.0


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def _discover(gateway: Gateway, client: httpx.AsyncClient) -> None:
    """Ask one ready replica per service which POST endpoints are idempotent (``GET /.well-known/lichen``)."""
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

    def __init__(self, gateway: Gateway, path: Path) -> None:
        self.gateway, self.path = gateway, path
        self.signature = _signature(path)

    def check(self, forced: bool = False) -> None:
        current = _signature(self.path)
        if current is None or (current == self.signature and not forced):
            return
        self.signature = current
        try:
            config = load_config(self.path)
        except LichenError as exc:
            log.error("reload_failed", error=str(exc))
            return
        if (config.host, config.port) != (self.gateway.config.host, self.gateway.config.port):
            log.warning("reload", warning="host/port changes need a restart")
        self.gateway.apply(config)
        log.info("reloaded", routes=len(config.routes), services=len(config.services),
                 generation=config.generation or None, forced=forced)


async def _watch(gateway: Gateway, watcher: ConfigWatcher, clock: Clock) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            await clock.sleep(gateway.config.reload_interval_s)
            watcher.check()
            if gateway.auth.keys.refresh():
                log.info("keys_reloaded", keys=len(gateway.auth.keys.keys))
            with contextlib.suppress(Exception):
                await _discover(gateway, client)


async def serve(config_path: Path, *, ready: asyncio.Event | None = None, clock: Clock | None = None) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish (up to 10 s) and exit."""
    clock = clock or SystemClock()
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    gateway = Gateway(config, loop, base_dir=config_path.resolve().parent)
    try:
        server = await loop.create_server(
            lambda: ClientConnection(gateway, gateway.connections, loop), config.host, config.port, backlog=4096, reuse_address=True
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}", where=str(config_path)) from None
    port = server.sockets[0].getsockname()[1]
    # stdout carries one line a parent may parse for the bound port; the log line says the same on stderr
    print(json.dumps({"event": "listening", "host": config.host, "port": port, "pid": os.getpid()}), flush=True)
    log.info("listening", host=config.host, port=port, pid=os.getpid())
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config_watcher = ConfigWatcher(gateway, config_path)
    loop.add_signal_handler(signal.SIGHUP, config_watcher.check, True)  # reload now (lichen up, or kill -HUP)
    watcher = loop.create_task(_watch(gateway, config_watcher, clock))
    sweeper = loop.create_task(sweep_deadlines(gateway.connections, loop))
    if ready is not None:
        ready.set()
    await stop.wait()
    server.close()
    gateway.activator.stop()  # a request held for a service at zero is answered now, not after the drain
    await drain(gateway, clock, DRAIN_S)
    for conn in list(gateway.connections):
        if conn.transport is not None:
            conn.transport.close()
    await gateway.activator.aclose()
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
