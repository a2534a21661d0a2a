"""CLI verbs: ``lichen certs dev`` makes a local CA (kept and reused) and a gateway certificate signed by it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, print_json
from lichen.errors import ConfigError

certs_app = typer.Typer(help="Certificates for the gateway's TLS (gateway.tls in lichen.yaml).", no_args_is_help=True)
CA_CERT, CA_KEY = "ca.crt", "ca.key"
CERT, KEY = "dev.crt", "dev.key"


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")


def default_ca_dir() -> Path:
    """Where the development CA is kept: ``$LICHEN_CA_DIR``, else ``$XDG_DATA_HOME/lichen/dev-ca``
    (``~/.local/share/lichen/dev-ca``): one CA per user, trusted once, reused by every app."""
    if os.environ.get("LICHEN_CA_DIR"):
        return Path(os.environ["LICHEN_CA_DIR"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "lichen" / "dev-ca"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(path)) from None


def _write(path: Path, data: bytes, mode: int) -> None:
    from lichen.runtime.workspaces import atomic_write

    try:
        atomic_write(path, data.decode("ascii"), mode=mode)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", where=str(path)) from None


def _make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700: only its user reads the CA key); a folder that is already there is left as it
    is (it may be the home directory, or /tmp); the CA key in it is 0600 either way."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError("is not a folder", where=str(path)) from None
        return
    except OSError as exc:
        raise ConfigError(f"cannot create the folder: {exc.strerror}", where=str(path)) from None
    try:
        os.chmod(path, 0o700)  # mkdir's mode is cut by the umask; this one is exact
    except OSError as exc:
        raise ConfigError(f"cannot make the folder private: {exc.strerror}", where=str(path)) from None


def _ca(ca_dir: Path, now: Any) -> tuple[Any, Any, bool]:
    """The kept CA (checked), or a new one written with its key 0600; True when it was created now."""
    from lichen.gateway import certificates

    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert_path.exists() or key_path.exists():
        cert, key = certificates.check_ca(_read(cert_path), _read(key_path), str(cert_path), str(key_path), now)
        return cert, key, False
    key = certificates.new_key()
    cert = certificates.make_ca(key, "Lichen development CA", now)
    _make_private_dir(ca_dir)
    _write(key_path, certificates.key_pem(key), 0o600)
    _write(cert_path, certificates.cert_pem(cert), 0o644)
    return cert, key, True


def _shown(path: Path, app_dir: Path) -> str:
    """``path`` as the spec writes it: relative to the app directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(app_dir.resolve()))
    except ValueError:
        return str(path.resolve())


@certs_app.command("dev")
def certs_dev(
    app_dir: Annotated[Path, typer.Argument(help="The app directory (holding lichen.yaml).")] = Path("."),
    out: Annotated[Path | None, typer.Option("--out", help="Where to write dev.crt and dev.key "
                                             "(default APP/.lichen/certs).")] = None,
    hosts: Annotated[str, typer.Option("--hosts", help="Comma-separated host names and IP addresses the "
                                       "certificate is for.")] = "localhost,127.0.0.1,::1",
    ca_dir: Annotated[Path | None, typer.Option("--ca-dir", help="Where the CA is kept (default $LICHEN_CA_DIR or "
                                                "~/.local/share/lichen/dev-ca).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=825, help="Validity of the server certificate.")] = 397,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a development certificate for the gateway, signed by a local CA.

    The CA is made on first use and kept (its key mode 0600): trust it once
    and every later certificate is trusted too. Each run writes a new server
    certificate and key (atomically, the key mode 0600); a running gateway
    serves the new one within a second or two, without a restart. For
    development only: use a real CA's certificate in production.

    Example: lichen certs dev examples/recsys --hosts localhost,127.0.0.1,myhost.local
    """
    from lichen.gateway import certificates

    host_list = certificates.parse_hosts(hosts)
    now = certificates.utc_now()
    ca_root = (ca_dir or default_ca_dir()).expanduser()
    ca_cert, ca_key, created = _ca(ca_root, now)
    target = out if out is not None else app_dir / ".lichen" / "certs"
    key = certificates.new_key()
    cert = certificates.make_server_cert(ca_cert, ca_key, key, host_list, now, days)
    from lichen.runtime.audit_logs import audited

    with audited(app_dir / ".lichen", "certs.dev", {"hosts": hosts, "out": str(target), "days": days}):
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder: {exc.strerror}", where=str(target)) from None
        _write(target / KEY, certificates.key_pem(key), 0o600)  # the key first: a gateway checks the pair whole
        _write(target / CERT, certificates.cert_pem(cert), 0o644)
    cert_info = certificates.info(cert)
    ca_file = (ca_root / CA_CERT).resolve()
    spec = {"cert_file": _shown(target / CERT, app_dir), "key_file": _shown(target / KEY, app_dir)}
    if as_json:
        print_json({"ca_cert": str(ca_file), "ca_key": str((ca_root / CA_KEY).resolve()), "ca_created": created,
                    "cert_file": str((target / CERT).resolve()), "key_file": str((target / KEY).resolve()),
                    "hosts": list(cert_info.hosts), "serial": cert_info.serial,
                    "not_after": cert_info.not_after.isoformat(), "spec": {"gateway": {"tls": spec}}})
        return
    console.print(f"{'created' if created else 'reused'} the development CA {ca_file}", markup=False)
    console.print(f"wrote {target / CERT} for {', '.join(cert_info.hosts)} (serial {cert_info.serial}, valid until "
                  f"{cert_info.not_after:%Y-%m-%d}) and {target / KEY} (mode 0600)", markup=False, soft_wrap=True)
    console.print("\ntrust the CA once on this machine (its key stays in " f"{ca_root}):", markup=False)
    for how in (f"Debian/Ubuntu: sudo cp {ca_file} /usr/local/share/ca-certificates/lichen-dev-ca.crt "
                "&& sudo update-ca-certificates",
                f"macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain "
                f"{ca_file}",
                f"curl:          curl --cacert {ca_file} https://localhost:8080/-/healthz",
                f"Python:        httpx.get(url, verify=\"{ca_file}\")  (or SSL_CERT_FILE={ca_file})",
                "Firefox:       Settings > Privacy & Security > Certificates > View Certificates > Import"):
        console.print(f"  {how}", markup=False, soft_wrap=True)
    console.print("\nthen add to lichen.yaml (paths are relative to the app directory):", markup=False)
    print(f"gateway:\n  tls:\n    cert_file: {spec['cert_file']}\n    key_file: {spec['key_file']}")
