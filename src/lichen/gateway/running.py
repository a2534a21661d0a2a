"""The gateway process: listen, watch the config and key files, discover idempotent endpoints, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import httpx

from lichen.errors import ConfigError, LichenError
from lichen.gateway.configs import GatewayConfig, load_config
from lichen.gateway.proxying import Gateway
from lichen.gateway.serving import ClientConnection, sweep_deadlines

log = logging.getLogger("lichen.gateway")

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
            log.info(json.dumps({"event": "discovered_idempotent", "service": name, "paths": sorted(paths)}))


async def _watch(gateway: Gateway, config_path: Path) -> None:
    signature = _signature(config_path)
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            await asyncio.sleep(gateway.config.reload_interval_s)
            current = _signature(config_path)
            if current is not None and current != signature:
                signature = current
                try:
                    config = load_config(config_path)
                    if (config.host, config.port) != (gateway.config.host, gateway.config.port):
                        log.warning(json.dumps({"event": "reload", "warning": "host/port changes need a restart"}))
                    gateway.apply(config)
                    log.info(json.dumps({"event": "reloaded", "routes": len(config.routes), "services": len(config.services)}))
                except LichenError as exc:
                    log.error(json.dumps({"event": "reload_failed", "error": str(exc)}))
            if gateway.auth.keys.refresh():
                log.info(json.dumps({"event": "keys_reloaded", "keys": len(gateway.auth.keys.keys)}))
            with contextlib.suppress(Exception):
                await _discover(gateway, client)


async def serve(config_path: Path, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, let in-flight requests finish (up to 10 s) and exit."""
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    gateway = Gateway(config, loop, base_dir=config_path.resolve().parent)
    try:
        server = await loop.create_server(
            lambda: ClientConnection(gateway), config.host, config.port, backlog=4096, reuse_address=True
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}", where=str(config_path)) from None
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "host": config.host, "port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = loop.create_task(_watch(gateway, config_path))
    sweeper = loop.create_task(sweep_deadlines(gateway.connections, loop))
    if ready is not None:
        ready.set()
    await stop.wait()
    server.close()
    deadline = loop.time() + DRAIN_S
    while any(c.task is not None for c in gateway.connections) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(gateway.connections):
        if conn.transport is not None:
            conn.transport.close()
    for task in (watcher, sweeper):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run_gateway(config_path: str | Path) -> None:
    """Blocking entry point for ``lichen gateway --config FILE`` (uvloop when available)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
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
