"""Ports: the ones an app listens on, the ones its replicas get, and who holds a port that is taken.

* :func:`pick_replica_port` gives a new replica a free port, inside
  ``replica_ports`` when the spec sets a range, never one another live
  replica of the app was given (it may not listen yet);
* :func:`bind_control_socket` binds the control API's socket on
  ``control.host``/``control.port``; with ``control.port`` unset it takes the
  port the app's last controller used (``.lichen/control.port``) when that
  is free, else one the OS picks, and remembers it, so a bookmarked
  dashboard URL survives restarts and two apps never collide;
* :func:`check_listen_ports` runs before a controller starts: a gateway or
  control port held by another process is one located error naming the
  holder (:func:`port_holder`): another Lichen app (its name and
  directory, read from the ``LICHEN_CONTROLLER`` mark in the holder's
  environment or from the ``controller.json`` in its directory) or any
  other process (its pid and command line).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from lichen.errors import ControlPlaneError
from lichen.runtime.processes import free_port
from lichen.runtime.workspaces import Workspace, atomic_write, read_controller_info
from lichen.spec.documents import LocatingSafeLoader, PathKey, dotted, parse_document
from lichen.spec.models import AppSpec, port_range


# ------------------------------------------------------------------ replica ports


def can_bind(host: str, port: int) -> bool:
    """True when a listener could bind ``host:port`` now (with SO_REUSEADDR, as uvicorn and the gateway do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_replica_port(host: str, replica_ports: str | None, avoid: Collection[int] = ()) -> int:
    """A free port for a new replica: the lowest free one of ``replica_ports`` (``"FIRST-LAST"``), else one the OS
    picks; never one in ``avoid``. Raises ``OSError(EADDRINUSE)`` when the range has no free port."""
    if replica_ports is None:
        for _ in range(100):
            port = free_port(host)
            if port not in avoid:
                return port
        raise OSError(errno.EADDRINUSE, "the OS offered only ports of live replicas")
    first, last = port_range(replica_ports)
    for port in range(first, last + 1):
        if port not in avoid and can_bind(host, port):
            return port
    raise OSError(errno.EADDRINUSE, f"no free port in replica_ports {replica_ports} ({last - first + 1} ports, "
                                    f"{sum(1 for p in avoid if first <= p <= last)} held by this app's replicas)")


# ------------------------------------------------------------------ who holds a port


@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    command: str = ""
    app_dir: str | None = None
    """the Lichen app the process belongs to, when it is one"""
    app: str | None = None
    role: str = ""
    """``gateway``, ``replica api-1a2b3-0``, ``controller``"""

    def describe(self) -> str:
        if self.pid is None:
            return "a process this user cannot see (another user's, or outside this machine's namespace)"
        if self.app_dir is not None:
            name = f"app {self.app!r}" if self.app else "a Lichen app"
            return f"the {self.role or 'process'} of {name} in {self.app_dir} (pid {self.pid})"
        return f"pid {self.pid} ({self.command or 'command line unknown'})"


def _listener_pid(host: str, port: int) -> int | None:
    wildcard = {"0.0.0.0", "::", ""}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.laddr.ip == host or conn.laddr.ip in wildcard or host in wildcard:
            return conn.pid
    return None


def _app_name(app_dir: Path) -> str | None:
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        data = yaml.load((app_dir / "lichen.yaml").read_text(), Loader=LocatingSafeLoader)
        return str(data.get("app")) if isinstance(data, dict) and data.get("app") else None
    return None


def _controller_dir(process: psutil.Process) -> Path | None:
    """The app dir of a controller: a directory (its cwd, or a path on its command line) whose
    ``.lichen/controller.json`` names this pid."""
    candidates: list[Path] = []
    with contextlib.suppress(psutil.Error, OSError):
        cwd = Path(process.cwd())
        candidates.append(cwd)
        candidates.extend(cwd / arg for arg in process.cmdline()[1:] if not arg.startswith("-"))
    for candidate in candidates:
        directory = candidate if candidate.is_dir() else candidate.parent
        with contextlib.suppress(OSError):
            info = read_controller_info(Workspace(directory))
            if info is not None and info.get("pid") == process.pid:
                return directory.resolve()
    return None


def port_holder(host: str, port: int) -> PortHolder | None:
    """Who listens on ``host:port`` (None when nobody does); a Lichen process is named by its app."""
    with contextlib.suppress(psutil.Error, OSError):
        pid = _listener_pid(host, port)
        if pid is None:
            return PortHolder(None) if not can_bind(host, port) else None
        process = psutil.Process(pid)
        command = " ".join(process.cmdline())[:200]
        env: dict[str, str] = {}
        with contextlib.suppress(psutil.Error, OSError):
            env = process.environ()
        marked = env.get("LICHEN_CONTROLLER") or env.get("LICHEN_APP_DIR")
        if marked:
            role = (env.get("LICHEN_COMPANION") or "") or (f"replica {env['LICHEN_REPLICA']}"
                                                           if env.get("LICHEN_REPLICA") else "")
            return PortHolder(pid, command, marked, _app_name(Path(marked)), role)
        controller = _controller_dir(process)
        if controller is not None:
            return PortHolder(pid, command, str(controller), _app_name(controller), "controller")
        return PortHolder(pid, command)
    return PortHolder(None) if not can_bind(host, port) else None


# ------------------------------------------------------------------ the app's own listeners


def _where(spec_path: Path, field: PathKey) -> tuple[str, bool]:
    """``file:line:column field`` of a spec field, and whether the field is written there."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        doc, _ = parse_document(spec_path.read_text(), str(spec_path))
        if doc is not None and field in doc.key_positions:
            line, column = doc.key_positions[field]
            return f"{spec_path}:{line}:{column} {dotted(field)}", True
    return f"{spec_path} {dotted(field)}", False


def port_taken(workspace: Workspace, field: PathKey, host: str, port: int,
               holder: PortHolder | None) -> ControlPlaneError:
    """The located error for a listener of this app that cannot bind ``host:port``."""
    where, written = _where(workspace.spec_path, field)
    default = "" if written else f" (the default; set {dotted(field)} in lichen.yaml to use another)"
    who = holder.describe() if holder is not None else "another process"
    hint = ""
    if holder is not None and holder.app_dir is not None:
        hint = f"; stop it with 'lichen down {holder.app_dir}', or give this app another {dotted(field)}"
    return ControlPlaneError(f"port {port} on {host}{default} is taken by {who}{hint}", where=where)


def check_listen_ports(workspace: Workspace, spec: AppSpec, *, control: bool = True) -> None:
    """Raise the located :func:`port_taken` error when the gateway's or a set control port is held by a
    process that is not this app's own (a gateway left running by this app's last controller is re-adopted).
    ``control=False``: only the gateway's (a running controller holds its own control port)."""
    listeners: list[tuple[PathKey, str, int | None]] = [(("gateway", "port"), spec.gateway.host, spec.gateway.port)]
    if spec.gateway.tls is not None and spec.gateway.tls.redirect_http_port is not None:
        listeners.append((("gateway", "tls", "redirect_http_port"), spec.gateway.host, spec.gateway.tls.redirect_http_port))
    if control:
        listeners.append((("control", "port"), spec.control.host, spec.control.port))
    for field, host, port in listeners:
        if port is None or can_bind(host, port):
            continue
        holder = port_holder(host, port)
        if holder is not None and holder.app_dir is not None and Path(holder.app_dir) == workspace.app_dir:
            continue
        raise port_taken(workspace, field, host, port, holder)


def remembered_port_path(workspace: Workspace) -> Path:
    return workspace.root / "control.port"


def bind_control_socket(workspace: Workspace, spec: AppSpec) -> socket.socket:
    """The control API's listening socket on ``control.host`` (see the module docs for the port)."""
    host, port = spec.control.host, spec.control.port
    candidates = [port] if port is not None else []
    if port is None:
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(remembered_port_path(workspace).read_text().strip()))
        candidates.append(0)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if port is not None:
                holder = port_holder(host, port) if exc.errno == errno.EADDRINUSE else None
                if exc.errno != errno.EADDRINUSE:
                    raise ControlPlaneError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                            where=_where(workspace.spec_path, ("control", "port"))[0]) from None
                raise port_taken(workspace, ("control", "port"), host, port, holder) from None
            continue
        sock.listen(2048)  # listening at once: no other app can bind it too before the API serves (uvicorn's backlog)
        if port is None:
            atomic_write(remembered_port_path(workspace), f"{sock.getsockname()[1]}\n")
        return sock
    raise ControlPlaneError(f"cannot listen on {host}: no port could be bound there",
                            where=_where(workspace.spec_path, ("control", "host"))[0])
