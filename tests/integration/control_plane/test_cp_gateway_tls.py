"""`gateway.tls` under `lichen up`: HTTPS on the gateway's port with a `lichen certs dev` certificate, the redirect
listener, and the plaintext loopback listener the controller probes and scrapes through (real processes)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, wait_until
from waiting import free_port

pytestmark = pytest.mark.slow


def test_lichen_up_serves_https_and_keeps_its_internal_listener(make_app) -> None:
    app = make_app()
    port, redirect = free_port(), free_port()
    made = json.loads(app.cli("certs", "dev", str(app.dir), "--ca-dir", str(app.dir / "ca"), "--hosts",
                              "localhost,127.0.0.1", "--json").stdout)
    spec = {"app": "tlsapp",
            "gateway": {"port": port, "tls": {"cert_file": made["spec"]["gateway"]["tls"]["cert_file"],
                                              "key_file": made["spec"]["gateway"]["tls"]["key_file"],
                                              "redirect_http_port": redirect, "hsts": {"max_age_s": 60}}},
            "services": {"web": {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES,
                                 "routes": [{"prefix": "/web", "strip_prefix": True}]}}}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    assert "valid" in app.cli("validate", str(app.dir)).stdout
    public = f"https://127.0.0.1:{port}"

    result = app.up()
    assert f"gateway: {public}" in result.stdout, result.stdout
    gateway = app.status()["gateway"]
    assert gateway["state"] == "Ready" and gateway["url"] == public and gateway["port"] == port
    internal = gateway["internal_url"]
    assert internal.startswith("http://127.0.0.1:") and internal != public
    trust = ssl.create_default_context(cafile=made["ca_cert"])
    response = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        httpx.get(f"{public}/web/whoami", verify=trust, timeout=5)), "the app over https", 30)
    assert response.headers["strict-transport-security"] == "max-age=60"
    assert httpx.get(f"{internal}/web/whoami", timeout=5).status_code == 200  # what replicas and the controller use
    moved = httpx.get(f"http://127.0.0.1:{redirect}/web/whoami", timeout=5)
    assert moved.status_code == 308 and moved.headers["location"] == f"https://127.0.0.1:{port}/web/whoami"

    # kill -9 the controller: the next one re-adopts the gateway through its internal listener
    os.kill(app.controller_pid(), signal.SIGKILL)
    app.up()
    adopted = app.status()["gateway"]
    assert adopted["pid"] == gateway["pid"] and adopted["internal_url"] == internal
    # a rotated certificate is served by the same gateway process
    rotated = json.loads(app.cli("certs", "dev", str(app.dir), "--ca-dir", str(app.dir / "ca"), "--hosts",
                                 "localhost,127.0.0.1", "--json").stdout)

    def served_serial() -> str:
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
        text = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True,
                              timeout=30).stdout
        return text.strip().removeprefix("serial=")

    wait_until(lambda: served_serial() == rotated["serial"], "the rotated certificate served", 30)
    assert app.status()["gateway"]["pid"] == gateway["pid"]
    app.cli("down", str(app.dir))
    assert app.marked_processes() == []
