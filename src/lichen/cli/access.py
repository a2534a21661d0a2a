"""CLI verbs: ``lichen tokens create|list|revoke`` (control-API tokens with roles) and ``lichen audit list|verify``.

Both work on the app's ``.lichen`` directory, with or without a running
controller: whoever can write there is the app's owner. A running controller
sees a new or revoked token on its next call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError, StateError

tokens_app = typer.Typer(help="Control-API tokens with a role: viewer, operator or admin.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log of every change: list it, verify it.", no_args_is_help=True)
AppDirOption = Annotated[Path, typer.Option("--app-dir", "-C", help="The app directory (holding lichen.yaml).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _root(app_dir: Path) -> Path:
    from lichen.runtime.workspaces import workspace_for

    return workspace_for(app_dir).root


def _when(epoch_s: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s)) if epoch_s else ""


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what will use it, e.g. grafana or ci.")],
    role: Annotated[str, typer.Option("--role", "-r", help="viewer (reads), operator (also scales, restarts, rolls "
                                                           "out), admin (also manages tokens).")] = "viewer",
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Lifetime such as 30d or 12h; default never.")] = None,
    app_dir: AppDirOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Create a control-API token; its secret is printed once and only its hash is stored.

    Use it with LICHEN_TOKEN=<token> lichen status, or as a bearer token.

    Example: lichen tokens create grafana --role viewer --expires-in 90d
    """
    from lichen.control.access import parse_role
    from lichen.runtime.access_tokens import TokenStore
    from lichen.runtime.audit_logs import audited
    from lichen.cli.keys import expiry_from

    try:
        chosen = parse_role(role)
    except ValueError as exc:
        raise ConfigError(str(exc), where="--role") from None
    expires_at = expiry_from(expires_in)
    root = _root(app_dir)
    with audited(root, "tokens.create", {"name": name, "role": chosen, "expires_in": expires_in}):
        token, secret = TokenStore(root / "tokens.db").create(name, chosen, expires_at)
    if as_json:
        print_json({**token.public(time.time()), "token": secret})
        return
    console.print(f"created token [bold]{token.id}[/] ({token.name}), role {token.role}")
    console.print("token (shown once, store it now):")
    print(secret)


@tokens_app.command("list")
def tokens_list(app_dir: AppDirOption = Path("."), as_json: JsonOption = False) -> None:
    """List control-API tokens (never their secrets); the owner's token in .lichen/token is always admin.

    Example: lichen tokens list --json
    """
    from lichen.runtime.access_tokens import TokenStore

    now = time.time()
    tokens = [t.public(now) for t in TokenStore(_root(app_dir) / "tokens.db").all().values()]
    if as_json:
        print_json(tokens)
        return
    if not tokens:
        console.print("no tokens besides the owner's (.lichen/token, admin); create one with lichen tokens create")
        return
    print_table("control-API tokens", ["id", "name", "role", "state", "created (UTC)", "expires (UTC)"],
                [[t["id"], t["name"], t["role"], t["state"], _when(t["created_at"]), _when(t["expires_at"])]
                 for t in tokens])


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id shown by `lichen tokens list`.")],
    app_dir: AppDirOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Revoke a token; a running controller refuses it from its next call.

    Example: lichen tokens revoke 3f9a1c2e
    """
    from lichen.runtime.access_tokens import TokenStore
    from lichen.runtime.audit_logs import audited

    root = _root(app_dir)
    with audited(root, "tokens.revoke", {"id": token_id}):
        token = TokenStore(root / "tokens.db").revoke(token_id)
    if as_json:
        print_json(token.public(time.time()))
        return
    console.print(f"revoked token [bold]{token.id}[/] ({token.name}, {token.role})")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the last N records.")] = 50,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this token id or local:<user>.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only actions containing this text.")] = None,
    app_dir: AppDirOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Show the latest audit records: when, who, what, and the result.

    Example: lichen audit list --actor 3f9a1c2e --action scale -n 20
    """
    from lichen.runtime.audit_logs import AuditLog

    log = AuditLog(_root(app_dir) / "audit.log")
    records = [r for _, r in log.records() if r is not None
               and (actor is None or r.get("actor") == actor) and (action is None or action in str(r.get("action")))]
    records = records[-limit:]
    if as_json:
        print_json(records)
        return
    if not records:
        console.print(f"no audit records in {log.path}" + (" match" if actor or action else ""))
        return
    print_table(None, ["seq", "time (UTC)", "actor", "role", "action", "params", "result"],
                [[r.get("seq"), _when(r.get("ts")), r.get("actor"), r.get("role") or "", r.get("action"),
                  _params_text(r.get("params")), _result_text(r)] for r in records])


def _params_text(params: Any) -> str:
    if not params:
        return ""
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in params.items())


def _result_text(record: dict[str, Any]) -> str:
    result = str(record.get("result", ""))
    detail = record.get("detail")
    status = record.get("status")
    return result + (f" {status}" if status else "") + (f": {detail}" if detail else "")


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[str | None, typer.Option("--expect-head", help="A head hash kept elsewhere: fail "
                                                                          "unless the chain contains it.")] = None,
    app_dir: AppDirOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Check the audit log's hash chain: an edited, deleted, inserted or cut-off record fails (exit 1).

    Prints the head (last seq and hash): keep a copy elsewhere and pass it back
    with --expect-head to catch a log rewritten from that point on.

    Example: lichen audit verify --json
    """
    from lichen.runtime.audit_logs import AuditLog

    log = AuditLog(_root(app_dir) / "audit.log")
    report = log.verify()
    problems = [{"line": n, "problem": p, "where": f"{log.path}:{n}"} for n, p in report.problems]
    if expect_head:
        hashes = {r.get("hash") for _, r in log.records() if r is not None}
        if expect_head not in hashes:
            problems.append({"line": 0, "problem": f"head {expect_head[:16]}... is not in the chain: the log was "
                                                   "rewritten or replaced", "where": str(log.path)})
    result = {"file": str(log.path), "intact": not problems, "records": report.records,
              "head": {"seq": report.head.seq - 1, "hash": report.head.hash}, "problems": problems}
    if as_json:
        print_json(result)
    elif problems:
        for problem in problems:
            console.print(f"[red]{problem['where']}[/]: {problem['problem']}")
    else:
        console.print(f"{log.path}: {report.records} records, chain intact; head seq {report.head.seq - 1} "
                      f"hash {report.head.hash}")
    if problems:
        raise StateError(f"{log.path}: the audit log does not verify ({len(problems)} problem(s))")


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(audit_app, name="audit")
