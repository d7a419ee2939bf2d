"""`sealfuse watch`: run the watch-folder daemon (systemd Type=notify service or foreground)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sealfuse.appliance.watch.errors import EXIT_STARTUP, exit_codes_epilog


def _default_tmp() -> Path:
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0])
    return Path(os.environ.get("TMPDIR") or "/tmp")


@click.command(name="watch", epilog=exit_codes_epilog())
@click.option("--spool", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Spool root holding inbox/, work/, outbox/, failed/ and status/ (created if missing).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config. A missing file means the defaults; an invalid one exits 2.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Models directory for the engine [default: the engine's own default].")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Idempotency database [default: SPOOL/.state].")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Hash-chained audit log [default: STATE/audit.jsonl].")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Prometheus textfile [default: STATE/sealfuse.prom].")
@click.option("--tmp-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where per-job temporaries live [default: $RUNTIME_DIRECTORY, else $TMPDIR, else /tmp].")
@click.option("--once", is_flag=True, help="Exit 0 once the models are loaded and the inbox is drained.")
@click.pass_context
def watch(ctx: click.Context, spool: Path, config_file: Path | None, models_dir: Path | None,
          state_dir: Path | None, audit_log: Path | None, metrics_file: Path | None, tmp_dir: Path | None,
          once: bool) -> None:
    """Watch SPOOL/inbox and swap faces in every job dropped there, once each.

    Drop a `*.job.json` manifest (media first, manifest last) into inbox/, or a media file into
    inbox/<preset>/. Results go to outbox/<job-id>/, quarantined drops to failed/<job-id>/ with
    error.json; status/<job-id>.json follows each job. See docs/watch-folder.md.
    """
    from sealfuse.appliance.audit import AuditError
    from sealfuse.appliance.errors import ApplianceError
    from sealfuse.appliance.watch.config import load_config
    from sealfuse.appliance.watch.daemon import Daemon, Paths
    from sealfuse.appliance.watch.errors import StartupError

    injected = ctx.obj if isinstance(ctx.obj, dict) else {}  # tests inject a worker command
    try:
        cfg = load_config(config_file)
    except StartupError as exc:
        click.echo(f"sealfuse watch: {exc}", err=True)
        sys.exit(exc.exit_code)
    state = state_dir or spool / ".state"
    paths = Paths(spool=spool, state=state, audit=audit_log or state / "audit.jsonl",
                  metrics=metrics_file or state / "sealfuse.prom", tmp_root=tmp_dir or _default_tmp())
    daemon = None
    try:
        daemon = Daemon(paths, cfg, models_dir=models_dir, once=once,
                        worker_command=injected.get("worker_command"))
        code = daemon.run()
    except StartupError as exc:
        click.echo(f"sealfuse watch: {exc}", err=True)
        if daemon is not None:
            daemon.close()
        sys.exit(exc.exit_code)
    except (AuditError, ApplianceError, OSError) as exc:  # ApplianceError: a planted link or FIFO
        click.echo(f"sealfuse watch: {exc}", err=True)
        if daemon is not None:
            daemon.close()
        sys.exit(EXIT_STARTUP)
    sys.exit(code)
