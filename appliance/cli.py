"""`sealfuse install | rollback | uninstall | status | doctor` on the appliance."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from sealfuse.appliance.errors import (
    DOCTOR_EXIT_CODES,
    EXIT_OK,
    EXIT_UNHEALTHY,
    INSTALL_EXIT_CODES,
    ROLLBACK_EXIT_CODES,
    STATUS_EXIT_CODES,
    UNINSTALL_EXIT_CODES,
    ApplianceError,
    NotInstalledError,
    epilog,
)
from sealfuse.appliance.install import InstallOptions
from sealfuse.appliance.release import Layout
from sealfuse.verifier import VerificationError

ROOT_HELP = "Install below this directory instead of / (systemctl calls are skipped) [default: /]."


class _Seconds(click.FloatRange):
    """A finite number of seconds, 0 to one day (NaN, infinities and negatives are usage errors)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


_SECONDS = _Seconds(0, 86400)


def _emit(as_json: bool, doc: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str) if as_json else text)


def _fail(as_json: bool, exc: ApplianceError | VerificationError) -> None:
    doc = {"ok": False, **exc.to_dict()}
    code = exc.exit_code
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"sealfuse: {doc['error']}: {doc['message']}", err=True)
        journal = doc.get("evidence", {}).get("journal")
        if journal:
            click.echo("last lines of the service's journal:\n" + journal, err=True)
    sys.exit(code)


def _run(as_json: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (ApplianceError, VerificationError) as exc:
        _fail(as_json, exc)


root_option = click.option("--root", type=click.Path(file_okay=False, path_type=Path),
                           default=Path("/"), show_default=True, help=ROOT_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.command(name="install", epilog=epilog(INSTALL_EXIT_CODES))
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@root_option
@click.option("--trust", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Trust file. Pinned to /etc/sealfuse/trust.json on the first install; later a "
                   "different one is accepted only as a rotation signed by the pinned threshold.")
@click.option("--allow-downgrade", is_flag=True,
              help="Accept a version at or below the installed one (audited).")
@click.option("--no-start", is_flag=True, help="Install and switch, but do not restart the unit.")
@click.option("--ready-timeout", type=_SECONDS, default=180.0, show_default=True,
              help="Seconds to wait for the new release's READY before returning to the old one.")
@click.option("--settle", type=_SECONDS, default=3.0, show_default=True,
              help="Seconds the new release must stay up after READY.")
@click.option("--python", "python", default="/usr/bin/python3", show_default=True,
              help="Interpreter the release venv is made from (outside /root: the unit runs it).")
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True,
              help="Releases kept on disk (current included); older ones are pruned.")
@click.option("--gpu/--no-gpu", default=None,
              help="Install the GPU drop-in [default: when /dev/nvidiactl exists].")
@json_option
def install(bundle: Path, root: Path, trust: Path | None, allow_downgrade: bool, no_start: bool,
            ready_timeout: float, settle: float, python: str, keep: int, gpu: bool | None,
            as_json: bool) -> None:
    """Verify BUNDLE offline and install it as the running release.

    Verifies every byte against the signed manifest before touching anything, builds a venv
    from the locked wheels (pip --no-index --require-hashes), switches
    /opt/sealfuse/current atomically, restarts sealfuse-watch.service and waits for READY.
    If the new release does not come up, the previous one is restored and restarted
    (RolledBackError, see the exit codes below).
    """
    from sealfuse.appliance.install import install as do_install

    opts = InstallOptions(trust=trust, allow_downgrade=allow_downgrade, start=not no_start,
                          ready_timeout=ready_timeout, settle=settle, python=python, keep=keep,
                          gpu=gpu)
    result = _run(as_json, do_install, bundle, opts, Layout(root))
    state = {True: "running (READY)", None: result.detail, False: "not running"}[result.started]
    _emit(as_json, result.to_dict(),
          f"installed sealfuse {result.version}"
          + (f" (was {result.previous})" if result.previous else "")
          + (" [DOWNGRADE]" if result.downgrade else "")
          + f": {state}" + (f"; pruned {', '.join(result.pruned)}" if result.pruned else ""))


@click.command(name="rollback", epilog=epilog(ROLLBACK_EXIT_CODES))
@root_option
@click.option("--to", "to", help="Version to return to [default: the previously active release].")
@click.option("--ready-timeout", type=_SECONDS, default=180.0, show_default=True)
@click.option("--settle", type=_SECONDS, default=3.0, show_default=True)
@json_option
def rollback(root: Path, to: str | None, ready_timeout: float, settle: float,
             as_json: bool) -> None:
    """Return to the previous kept release, restart the unit and wait for READY.

    If that release does not come up, the one that was running is restored (RolledBackError).
    """
    from sealfuse.appliance.install import rollback as do_rollback

    result = _run(as_json, do_rollback, Layout(root), to=to,
                  opts=InstallOptions(ready_timeout=ready_timeout, settle=settle))
    _emit(as_json, result.to_dict(),
          f"rolled back to {result.version} (was {result.previous}): {result.detail}")


@click.command(name="uninstall", epilog=epilog(UNINSTALL_EXIT_CODES))
@root_option
@click.option("--purge", is_flag=True,
              help="Also remove the spool, audit log, state, install record, pinned trust "
                   "file, config and the sealfuse user [default: keep them].")
@json_option
def uninstall(root: Path, purge: bool, as_json: bool) -> None:
    """Stop and remove sealfuse: the unit, its drop-ins, sysusers/tmpfiles entries, releases.

    Without --purge, /var/lib/sealfuse (spool, audit log, state) and /etc/sealfuse stay.
    """
    from sealfuse.appliance.uninstall import uninstall as do_uninstall

    result = _run(as_json, do_uninstall, Layout(root), purge=purge)
    _emit(as_json, result.to_dict(),
          "removed:\n  " + "\n  ".join(result.removed or ["(nothing)"])
          + ("\nkept:\n  " + "\n  ".join(result.kept) if result.kept else ""))


@click.command(name="status", epilog=epilog(STATUS_EXIT_CODES))
@root_option
@json_option
def status(root: Path, as_json: bool) -> None:
    """Show the running release, the unit's state, the queue, the last job and who signed it."""
    from sealfuse.appliance.doctor import status as get_status

    doc = _run(as_json, get_status, Layout(root))
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        sig = doc["signature"] or {}
        unit = doc["unit"]
        lines = [
            f"release:   {doc['release'] or 'not installed'}"
            + (f" (previous {doc['previous']})" if doc["previous"] else ""),
            f"kept:      {', '.join(doc['kept']) or '-'}",
            f"service:   {unit.get('ActiveState')}/{unit.get('SubState', '-')}, restarts "
            f"{unit.get('NRestarts', '-')}, {unit.get('StatusText') or ''}",
            "queue:     " + ", ".join(f"{k} {v}" for k, v in doc["queue"].items()),
            f"last job:  {doc['last_job'] or '-'}",
            f"signed by: {', '.join(s['name'] for s in sig.get('signers') or []) or '-'} "
            f"(threshold {sig.get('threshold', '-')}), manifest {sig.get('manifest_sha256', '-')}",
            f"validity:  {sig.get('created', '-')} .. {sig.get('expires', '-')}",
            f"licences:  policy {doc['licence_policy'] or '-'}; "
            + (", ".join(f"{m['name']} ({m['licence_class'] or 'unknown'}"
                         + (f"; commercial by grant {m['licence_grant']})"
                            if m.get("licence_grant") else ")")
                         for m in doc["models"]) or "no models"),
        ]
        click.echo("\n".join(lines))
    if not doc["installed"]:
        sys.exit(NotInstalledError.exit_code)
    if doc["unit"].get("ActiveState") not in ("active", "unknown (no systemd for this root)"):
        sys.exit(EXIT_UNHEALTHY)


@click.command(name="doctor", epilog=epilog(DOCTOR_EXIT_CODES))
@root_option
@json_option
def doctor(root: Path, as_json: bool) -> None:
    """Check the installed release: service, ONNX Runtime providers, GPU, models re-hashed
    against the signed manifest, the unit's `systemd-analyze security` exposure, free space,
    and the clock against the manifest's created/expires."""
    from sealfuse.appliance.doctor import doctor as run_doctor

    checks = _run(as_json, run_doctor, Layout(root))
    ok = all(c.ok is not False for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        mark = {True: "ok  ", False: "FAIL", None: "--  "}
        click.echo("\n".join(f"{mark[c.ok]} {c.name:<10} {c.detail}" for c in checks))
    if len(checks) == 1 and checks[0].name == "release" and checks[0].ok is False:
        sys.exit(NotInstalledError.exit_code)
    sys.exit(EXIT_OK if ok else EXIT_UNHEALTHY)
