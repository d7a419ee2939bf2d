"""The `sealfuse` console command.

Each package owns its subcommands; they are imported only when invoked, so that
`sealfuse verify` runs on a workstation that has only the verifier's dependencies.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from sealfuse import __version__

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "swap": ("sealfuse.engine.cli:swap", "Swap faces in an image or video."),
    "models": ("sealfuse.engine.cli:models", "List the model catalog; pin model files."),
    "verify": ("sealfuse.verifier.cli:verify", "Verify a bundle offline against a trust file."),
    "keygen": ("sealfuse.verifier.cli:keygen", "Create an Ed25519 signing key pair."),
    "trust": ("sealfuse.verifier.cli:trust", "Create, sign and rotate trust files."),
    "bundle": ("sealfuse.bundle.cli:bundle", "Build, sign and inspect bundles (build host)."),
    "install": ("sealfuse.appliance.cli:install", "Install a verified bundle as a new release."),
    "rollback": ("sealfuse.appliance.cli:rollback", "Return to the previous release."),
    "uninstall": ("sealfuse.appliance.cli:uninstall", "Remove sealfuse from this machine."),
    "status": ("sealfuse.appliance.cli:status", "Show release, service and queue state."),
    "doctor": ("sealfuse.appliance.cli:doctor", "Check providers, models, units and clock."),
    "watch": ("sealfuse.appliance.watch_cli:watch", "Run the watch-folder daemon."),
    "run-job": ("sealfuse.appliance.runjob:run_job", "Run one claimed watch job (Slurm compute node)."),
    "audit": ("sealfuse.appliance.audit:audit", "Verify the hash-chained audit log."),
    "console": ("sealfuse.appliance.console_cli:console", "Serve the studio web console and API."),
    "users": ("sealfuse.appliance.console_cli:users", "Manage the console's accounts."),
    "provenance": ("sealfuse.cli:provenance", "C2PA content credentials: init the CA, verify an output."),
}
# `sealfuse provenance` spans two packages: `verify` (verifier, light) and `init` (build host)
PROVENANCE_COMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("sealfuse.verifier.provenance:verify", "Check a file's C2PA content credentials offline."),
    "init": ("sealfuse.bundle.provenance:init_command", "Create the studio CA and the appliance certificate."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    commands_table: dict[str, tuple[str, str]] = COMMANDS

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = args[:args.index("--")] if "--" in args else args
        ctx.meta.setdefault("sealfuse.json", "--json" in options)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """With --json, a usage error (bad option, missing argument, bad value) is printed as the
        same JSON error object every command prints, on stdout, with the same exit code."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not ctx.meta.get("sealfuse.json") or ctx.meta.get("sealfuse.json_done"):
                raise
            ctx.meta["sealfuse.json_done"] = True
            click.echo(json.dumps({"ok": False, "error": type(exc).__name__,
                                   "reason": "usage_error" if exc.exit_code == 2 else "error",
                                   "message": exc.format_message(), "evidence": {},
                                   "exit_code": exc.exit_code}, indent=2, sort_keys=True))
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands_table)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands_table:
            return None
        target, short_help = self.commands_table[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or str(exc)
            if missing.split(".")[0] == "sealfuse" and missing != module_name:
                raise  # a bug in sealfuse itself, not a missing optional dependency
            return _unavailable(name, short_help, missing)
        command = getattr(module, attr, None)
        if command is None:
            return _unavailable(name, short_help, f"{module_name}.{attr}")
        return command


def _unavailable(name: str, short_help: str, missing: str) -> click.Command:
    @click.command(name=name, short_help=f"{short_help} (unavailable: needs {missing})")
    def _cmd() -> None:
        raise click.ClickException(
            f"'sealfuse {name}' needs '{missing}', which this installation lacks. "
            "Install sealfuse with the engine extra (pip install 'sealfuse[all]')."
        )

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sealfuse")
def main() -> None:
    """sealfuse: an air-gapped face-swap appliance.

    Build and sign bundles on a connected host, verify and install them offline,
    and swap faces in a hardened watch-folder service.
    """


class _ProvenanceGroup(LazyGroup):
    commands_table = PROVENANCE_COMMANDS


@click.group(cls=_ProvenanceGroup)
def provenance() -> None:
    """C2PA content credentials on every output.

    `init` (build host) creates the studio CA and the appliance's signing certificate;
    `verify` checks a file offline and needs only the verifier's install plus c2pa-python.
    """
