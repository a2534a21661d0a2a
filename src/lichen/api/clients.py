"""The control API client the CLI uses: finds the controller of an app dir and calls it."""

from __future__ import annotations

import os
from typing import Any

import httpx

from lichen import __version__
from lichen.errors import ConfigError, ControlPlaneError
from lichen.runtime import processes, teardown
from lichen.runtime.audit_logs import local_actor
from lichen.runtime.workspaces import Workspace, read_controller_info, read_token


def _validation_text(detail: Any) -> str:
    """FastAPI's 422 ``detail`` (a list of pydantic errors) as one line: ``lines: Input should be ...``."""
    if not isinstance(detail, list):
        return str(detail or "")
    parts = []
    for item in detail:
        if isinstance(item, dict):
            loc = [str(p) for p in item.get("loc") or [] if p not in ("query", "body", "path")]
            parts.append(f"{'.'.join(loc) or 'request'}: {item.get('msg', '')}")
    return "; ".join(parts)


class ControlClient:
    def __init__(self, workspace: Workspace, timeout_s: float = 10.0) -> None:
        info = read_controller_info(workspace)
        if not info or not processes.is_alive(int(info.get("pid", 0)), None):
            left = len(teardown.marked_processes(workspace.app_dir))
            raise ControlPlaneError(
                f"no controller runs for {workspace.app_dir}; start one with 'lichen up'" if not left else
                f"no controller runs for {workspace.app_dir}, but {left} of its processes still run (was the "
                "controller killed?): 'lichen up' re-adopts them, 'lichen down' stops them"
            )
        self.workspace = workspace
        self.info = info
        self.pid = int(info["pid"])
        token = os.environ.get("LICHEN_TOKEN") or read_token(workspace)  # a token with a role, else the owner's
        self._http = httpx.Client(base_url=info["url"], timeout=timeout_s, headers={
            "Authorization": f"Bearer {token}", "X-Lichen-Client": f"lichen-cli/{__version__} {local_actor()}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ControlPlaneError(
                f"no controller answers for {self.workspace.app_dir} at {self.info['url']} "
                f"(stale {self.workspace.controller_file}: pid {self.pid} is not serving it); "
                "start one with 'lichen up'"
            ) from None
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"the controller at {self.info['url']} did not answer: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json()
            except ValueError:
                detail = None
            if not isinstance(detail, dict):
                raise ControlPlaneError(f"the controller refused {method} {path}: {response.text}")
            if detail.get("refused"):  # a re-applied spec refused as a whole: bad input, nothing changed
                raise ConfigError(str(detail.get("error")))
            message = detail.get("error") or _validation_text(detail.get("detail")) or response.text
            raise ControlPlaneError(f"the controller refused {method} {path}: {message}")
        return response.json()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def apply(self) -> dict[str, Any]:
        return self._call("POST", "/v1/apply")

    def scale(self, service: str, replicas: int) -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{service}/scale", json={"replicas": replicas})

    def restart(self, service: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{service}/restart")

    def energy(self, window_s: float) -> dict[str, Any]:
        """``lichen energy``'s report over the last ``window_s`` (``/v1/energy``)."""
        return self._call("GET", "/v1/energy", params={"window_s": window_s}, timeout=60.0)

    def advice(self, window_s: float, service: str | None = None) -> dict[str, Any]:
        """``lichen advise``'s recommendations from the last ``window_s`` (``/v1/advice``)."""
        params: dict[str, Any] = {"window_s": window_s}
        if service is not None:
            params["service"] = service
        return self._call("GET", "/v1/advice", params=params, timeout=60.0)

    def rollout(self, service: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/services/{service}/rollout")

    def rollout_action(self, service: str, action: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{service}/rollout/{action}", json={"reason": reason})

    def stop(self, service: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{service}/stop")

    def shutdown(self) -> dict[str, Any]:
        return self._call("POST", "/v1/shutdown")

    def events(self, service: str | None = None, limit: int = 100, after_id: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "after_id": after_id}
        if service:
            params["service"] = service
        return self._call("GET", "/v1/events", params=params)

    def set_faults(self, service: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace a service's traffic faults at the gateway (``[]`` clears them), as ``lichen chaos`` does."""
        return self._call("PUT", f"/v1/services/{service}/faults", json={"faults": faults})

    def state_store(self) -> dict[str, Any]:
        """The state store's health: writes waiting for the disk, failed so far, live disk faults."""
        return self._call("GET", "/v1/state")

    def notifications(self, since: float = 0.0) -> dict[str, Any]:
        """The alert notifications created from ``since`` (wall s) on, with their outcomes, and the receivers held
        down by ``lichen chaos``."""
        return self._call("GET", "/v1/notifications", params={"since": since})

    def logs(self, service: str, lines: int = 50, offsets: dict[str, int] | None = None) -> dict[str, Any]:
        import json

        return self._call("GET", f"/v1/logs/{service}", params={"lines": lines, "offsets": json.dumps(offsets or {})})

    def query(self, expr: str, time_s: float) -> list[tuple[dict[str, str], float]]:
        """An instant PromQL query on the controller's series store (``/api/v1/query``), as
        ``(labels, value)`` pairs like ``Engine.instant_samples``."""
        body = self._call("GET", "/api/v1/query", params={"query": expr, "time": f"{time_s:.3f}"})
        data = body.get("data") or {}
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data.get("result") or []]

    def endpoints(self, version: int = -1, wait_s: float = 0.0) -> dict[str, Any]:
        return self._call("GET", "/v1/endpoints", params={"version": version, "wait_s": wait_s},
                          timeout=wait_s + 10.0)
