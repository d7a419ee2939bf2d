"""`sealfuse console` (the studio's web console and API) and `sealfuse users` (its accounts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sealfuse.appliance.console.config import DEFAULT_CONFIG, load_config
from sealfuse.appliance.console.errors import EXIT_CODES, BadPasswordError, ConsoleError, ServeError
from sealfuse.appliance.console.users import MAX_PASSWORD, ROLES
from sealfuse.verifier.errors import exit_code_help

EPILOG = exit_code_help(EXIT_CODES)
CONFIG_HELP = f"Console config (TOML). Default: {DEFAULT_CONFIG}; a missing file means the defaults."


def _fail(err: ConsoleError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(err.to_dict(), sort_keys=True))
    else:
        click.echo(f"error: {err.message}", err=True)
    sys.exit(err.exit_code)


def _cfg(config: Path, state_dir: Path | None) -> Any:
    return load_config(config, state_dir=state_dir)


@click.command(name="console", epilog=EPILOG)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help=CONFIG_HELP)
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Address to listen on (overrides console.listen). Default: 127.0.0.1:8080.")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The watch folder (overrides console.spool). Default: /var/lib/sealfuse/spool.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Accounts, job records and the console's audit log. "
                   "Default: /var/lib/sealfuse/console.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where models.lock.json says which models jobs may name. Default: /opt/sealfuse/current/models.")
def console(config: Path, listen: str | None, spool: Path | None, state_dir: Path | None,
            models_dir: Path | None) -> None:
    """Serve the studio console: web pages for people and a JSON API under /api/v1.

    HTTPS when console.tls_cert and console.tls_key are set; otherwise plain HTTP, meant for
    127.0.0.1 or behind the studio's TLS reverse proxy (set console.secure_cookies = true there).
    /healthz answers without login; the OpenAPI document is /api/v1/openapi.json.
    """
    import uvicorn

    from sealfuse.appliance.console.app import create_app

    try:
        cfg = load_config(config, listen=listen, spool=spool, state_dir=state_dir, models_dir=models_dir)
        app = create_app(cfg)
    except ConsoleError as err:
        _fail(err, False)
        return
    host, port = cfg.host_port
    kw: dict[str, Any] = {}
    if cfg.tls:
        for p in (cfg.tls_cert, cfg.tls_key):
            assert p is not None
            if not p.is_file():
                _fail(ServeError(f"TLS file {p} does not exist", path=str(p)), False)
        kw = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)}
    click.echo(f"sealfuse console on {'https' if cfg.tls else 'http'}://{cfg.listen} (spool {cfg.spool})", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False,
                    date_header=True, access_log=True, timeout_graceful_shutdown=5, **kw)
    except (OSError, SystemExit) as exc:
        if isinstance(exc, SystemExit) and not exc.code:
            return
        _fail(ServeError(f"cannot serve on {cfg.listen}: {exc}", listen=cfg.listen), False)


@click.group(name="users", epilog=EPILOG)
def users() -> None:
    """Manage the console's accounts (stored in STATE/users.json, argon2id hashes).

    Roles: submitter (submits, sees and downloads own jobs), reviewer (all jobs and their
    media), auditor (audit log and job records, no media), admin (accounts, audit log, records).
    """


state_opt = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Default: console.state_dir of the config (/var/lib/sealfuse/console).")
config_opt = click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
                          show_default=True, help=CONFIG_HELP)
json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")


def _read_password(confirm: bool = True) -> str:
    """The password from stdin: one line when piped, asked twice on a terminal."""
    if sys.stdin.isatty():
        first = click.prompt("Password", hide_input=True, err=True)
        if confirm and click.prompt("Again", hide_input=True, err=True) != first:
            raise BadPasswordError("the two entries differ")
        return str(first)
    raw = sys.stdin.buffer.readline(MAX_PASSWORD * 4 + 2)  # bounded: a huge stdin is not read whole
    if not raw:
        raise BadPasswordError("no password on stdin")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPasswordError("the password is not valid UTF-8 text") from None
    return line.rstrip("\n")


class _Audit:
    """The console's audit log as the CLI writes it (as root: the file stays the service's)."""

    def __init__(self, path: Path) -> None:
        from sealfuse.appliance.audit import AuditLog

        self.path, self.log = path, AuditLog(path)

    def append(self, event: str, **fields: Any) -> None:
        from sealfuse.appliance.console.users import match_owner

        self.log.append(event, **fields)
        match_owner(self.path)


def _store_and_audit(config: Path, state_dir: Path | None) -> tuple[Any, _Audit]:
    from sealfuse.appliance.console.users import UserStore

    cfg = _cfg(config, state_dir)
    return UserStore(cfg.state_dir), _Audit(cfg.audit_log)


def _operator() -> str:
    import getpass
    import os

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


@users.command(name="add", epilog=EPILOG)
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the account may do.")
@click.option("--email", default=None, help="Mail address for job-end notifications (optional).")
@config_opt
@state_opt
@json_opt
def users_add(name: str, role: str, email: str | None, config: Path, state_dir: Path | None, as_json: bool) -> None:
    """Create account NAME; the password is read from stdin (at least 10 characters)."""
    try:
        store, audit = _store_and_audit(config, state_dir)
        user = store.add(name, role, _read_password(), email=email)
        audit.append("console_user_added", user=_operator(), target=name, role=role)
    except ConsoleError as err:
        _fail(err, as_json)
        return
    click.echo(json.dumps({"ok": True, "user": user.public()}) if as_json else f"added {name} ({role})")


@users.command(name="passwd", epilog=EPILOG)
@click.argument("name")
@config_opt
@state_opt
@json_opt
def users_passwd(name: str, config: Path, state_dir: Path | None, as_json: bool) -> None:
    """Set NAME's password (read from stdin). Signs NAME out once the console restarts or re-checks."""
    try:
        store, audit = _store_and_audit(config, state_dir)
        if store.get(name) is None:
            from sealfuse.appliance.console.errors import NoSuchUserError

            raise NoSuchUserError(f"no user {name!r}", name=name)
        store.passwd(name, _read_password())
        audit.append("console_user_passwd", user=_operator(), target=name)
    except ConsoleError as err:
        _fail(err, as_json)
        return
    click.echo(json.dumps({"ok": True, "user": name}) if as_json else f"password of {name} changed")


@users.command(name="disable", epilog=EPILOG)
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the account again instead.")
@config_opt
@state_opt
@json_opt
def users_disable(name: str, enable: bool, config: Path, state_dir: Path | None, as_json: bool) -> None:
    """Disable account NAME (its sessions stop working at their next request)."""
    try:
        store, audit = _store_and_audit(config, state_dir)
        store.set_disabled(name, not enable)
        audit.append("console_user_enabled" if enable else "console_user_disabled", user=_operator(), target=name)
    except ConsoleError as err:
        _fail(err, as_json)
        return
    click.echo(json.dumps({"ok": True, "user": name, "disabled": not enable}) if as_json
               else f"{name} {'enabled' if enable else 'disabled'}")


@users.command(name="list", epilog=EPILOG)
@config_opt
@state_opt
@json_opt
def users_list(config: Path, state_dir: Path | None, as_json: bool) -> None:
    """List the accounts (never their hashes)."""
    try:
        store, _audit = _store_and_audit(config, state_dir)
        rows = [u.public() for u in store.list()]
    except ConsoleError as err:
        _fail(err, as_json)
        return
    if as_json:
        click.echo(json.dumps({"ok": True, "users": rows}, sort_keys=True))
        return
    for r in rows:
        click.echo(f"{r['name']:<20} {r['role']:<10} {'disabled' if r['disabled'] else 'active':<9} {r['changed']}")
