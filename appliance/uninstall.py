"""`sealfuse uninstall [--purge]`: stop and remove the service, its units and the releases; with
--purge also the spool, audit log, state, configuration and the sealfuse user.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealfuse.appliance.errors import NotInstalledError, SystemdError
from sealfuse.appliance.release import (
    InstallRecord,
    Layout,
    Systemd,
    audit_event,
    locked,
    remove_tree,
    systemd_for,
)
from sealfuse.appliance.units import apparmor_enabled, service_files, stop_console


@dataclass
class UninstallResult:
    """What was removed, and what was kept (without --purge)."""

    removed: list[str]
    kept: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "removed": self.removed, "kept": self.kept}


def _delete_user(layout: Layout) -> list[str]:
    """Remove the users and groups that sysusers.d created (the console's first: it is a member
    of group sealfuse)."""
    removed = []
    root_args = [] if layout.root == Path("/") else ["--root", str(layout.root)]
    for tool, name, db in (("userdel", "sealfuse-console", "passwd"), ("groupdel", "sealfuse-console", "group"),
                           ("userdel", "sealfuse", "passwd"), ("groupdel", "sealfuse", "group")):
        dbfile = layout.root / "etc" / db
        if dbfile.exists() and any(line.startswith(f"{name}:")
                                   for line in dbfile.read_text().splitlines()):
            result = subprocess.run([tool, *root_args, name], capture_output=True, text=True,
                                    timeout=60)
            if result.returncode != 0:
                raise SystemdError(f"{tool} {name} failed: {result.stderr.strip()}")
            removed.append(f"{db}:{name}")
    return removed


def uninstall(layout: Layout | None = None, systemd: Systemd | None = None, *,
              purge: bool = False) -> UninstallResult:
    """Stop and remove the service, units and releases. Without `purge` the spool, audit log,
    state, install record and pinned trust stay; with it everything sealfuse made goes."""
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    record = InstallRecord.load(layout)
    if record.current is None and not layout.opt.exists() and not purge:
        raise NotInstalledError("sealfuse is not installed", path=str(layout.opt))
    removed: list[str] = []
    with locked(layout):
        audit_event(layout, "uninstall", version=record.current, purge=purge)
        stop_console(layout, systemd)
        systemd.stop()
        systemd.disable()
        ours = [*service_files(layout), layout.sysusers_file, layout.tmpfiles_file]
        if layout.apparmor_file.exists() and apparmor_enabled(layout):
            subprocess.run(["apparmor_parser", "-R", str(layout.apparmor_file)],
                           capture_output=True, timeout=60)
        ours.append(layout.apparmor_file)
        for path in ours:
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if layout.dropin_dir.is_dir() and (purge or not any(layout.dropin_dir.iterdir())):
            remove_tree(layout.dropin_dir)
            removed.append(str(layout.dropin_dir))
        systemd.daemon_reload()
        if layout.opt.exists():
            remove_tree(layout.opt)
            removed.append(str(layout.opt))
        if purge:
            for path in (layout.var, layout.etc, layout.root / "run" / "sealfuse"):
                if path.exists():
                    remove_tree(path)
                    removed.append(str(path))
            removed += _delete_user(layout)
            for d in (layout.sysusers_file.parent, layout.tmpfiles_file.parent,
                      layout.apparmor_file.parent):
                with contextlib.suppress(OSError):  # only when empty: others' files stay
                    d.rmdir()
                    removed.append(str(d))
            kept: list[str] = []
        else:
            record.current = None
            record.order = []
            record.log("uninstall")
            record.save(layout)
            kept = [str(p) for p in (layout.spool, layout.audit_log, layout.var / "state",
                                     layout.record, layout.trust, layout.watch_config)
                    if p.exists()]
    if purge:
        layout.lock.unlink(missing_ok=True)
    return UninstallResult(removed, kept)
