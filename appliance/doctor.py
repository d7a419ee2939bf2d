"""`sealfuse status` and `sealfuse doctor`: what is installed and running, and whether it is healthy
(providers, GPU, models re-hashed against the signed manifest, unit exposure, space, clock).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealfuse.appliance.clock import clock_behind
from sealfuse.appliance.errors import UnsafePathError
from sealfuse.appliance.fsutil import (
    open_dir,
    open_file_at,
    read_json_file,
    read_regular_bytes,
    sha256_file,
)
from sealfuse.appliance.release import InstallRecord, Layout, Systemd, systemd_for

MAX_EXPOSURE = 1.0
MIN_FREE_BYTES = 2 << 30
EXPIRY_WARNING_DAYS = 30


def _release_info(layout: Layout, version: str | None) -> dict[str, Any]:
    if version is None:
        return {}
    try:
        info = read_json_file(layout.release(version) / "release.json")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _real_dir(path: Path) -> bool:
    """A directory itself, not a symlink to one (the spool is the service user's)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def queue_counts(spool: Path) -> dict[str, int]:
    """Entries waiting in inbox/ (recursively, skipping dotfiles and *.partial), and the
    number of jobs in work/, outbox/ and failed/. No symlink in the spool is followed."""
    counts: dict[str, int] = {}
    inbox = spool / "inbox"
    n = 0
    if _real_dir(inbox):
        for _dirpath, dirnames, filenames in os.walk(inbox):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            n += sum(1 for f in filenames if not f.startswith(".") and not f.endswith(".partial"))
    counts["inbox"] = n
    for name in ("work", "outbox", "failed"):
        d = spool / name
        counts[name] = sum(1 for p in d.iterdir() if not p.name.startswith(".")) \
            if _real_dir(d) else 0
    return counts


def last_job(audit_log: Path, tail_bytes: int = 256 << 10) -> dict[str, Any] | None:
    """The most recent `done` or `failed` entry of the audit log (read without following a link
    or blocking on a FIFO the service user may have put in its place)."""
    try:
        dir_fd = open_dir(audit_log.parent)
        try:
            fd = open_file_at(dir_fd, audit_log.name, os.O_RDONLY, where=str(audit_log.parent))
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()
    except (OSError, UnsafePathError):
        return None
    for raw in reversed(lines):  # the service user writes this log: any line may be hostile
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and entry.get("event") in ("done", "failed"):
            return {k: entry.get(k) for k in ("time", "event", "job", "reason", "seconds")
                    if entry.get(k) is not None}
    return None


def status(layout: Layout | None = None, systemd: Systemd | None = None) -> dict[str, Any]:
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    record = InstallRecord.load(layout)
    info = _release_info(layout, record.current)
    kept = sorted(p.name for p in layout.releases.iterdir()
                  if not p.name.startswith(".")) if layout.releases.is_dir() else []
    unit = systemd.show("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result")
    return {
        "installed": record.current is not None,
        "release": record.current,
        "current_link": layout.current_version(),
        "previous": record.previous(layout),
        "kept": kept,
        "unit": unit or {"ActiveState": "unknown (no systemd for this root)"},
        "queue": queue_counts(layout.spool),
        "last_job": last_job(layout.audit_log),
        "signature": {k: info.get(k) for k in ("manifest_sha256", "signers", "threshold",
                                               "sigstore", "created", "expires", "installed",
                                               "downgrade")} if info else None,
        # A release made from a bundle without a policy (older) is "any".
        "licence_policy": info.get("licence_policy", "any") if info else None,
        "models": [{k: m.get(k) for k in ("name", "licence", "licence_class", "licence_grant")}
                   for m in info.get("models", [])] if info else [],
        "history": record.history[-5:],
    }


# -- doctor ---------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable / informational
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def check_providers(layout: Layout) -> Check:
    python = layout.current / "venv" / "bin" / "python"
    if not python.exists():
        return Check("providers", False, f"{python} missing")
    result = _run([str(python), "-c", "import json, onnxruntime; "
                   "print(json.dumps(onnxruntime.get_available_providers()))"])
    if result is None or result.returncode != 0:
        err = (result.stderr.strip().splitlines() or ["?"])[-1] if result else "did not run"
        return Check("providers", False, f"onnxruntime does not import: {err}")
    providers = json.loads(result.stdout.strip().splitlines()[-1])
    return Check("providers", "CPUExecutionProvider" in providers, ", ".join(providers))


def check_gpu(layout: Layout) -> Check:
    nodes = sorted(p.name for p in (layout.root / "dev").glob("nvidia*"))
    if not nodes:
        return Check("gpu", None, "no NVIDIA device nodes (CPU only)")
    dropin = (layout.dropin_dir / "gpu.conf").exists()
    return Check("gpu", dropin, f"devices {', '.join(nodes)}; GPU drop-in "
                                f"{'installed' if dropin else 'MISSING (sealfuse install --gpu)'}")


def check_models(layout: Layout) -> Check:
    from sealfuse.verifier.errors import VerificationError
    from sealfuse.verifier.model import Manifest

    try:
        manifest = Manifest.from_bytes(read_regular_bytes(layout.current / "manifest.json"))
    except (OSError, ValueError, VerificationError) as exc:
        return Check("models", False, f"cannot read the release manifest: {exc}")
    problems = []
    for m in manifest.members:
        if m.kind != "model":
            continue
        path = layout.current / "models" / Path(m.path).name
        try:
            digest, _size = sha256_file(path)  # a FIFO, device or link is named, never read
        except OSError as exc:
            problems.append(f"{path.name}: {exc.strerror}")
            continue
        if digest != m.sha256:
            problems.append(f"{path.name}: sha256 {digest} != manifest {m.sha256}")
        elif os.stat(path).st_mode & 0o222:
            problems.append(f"{path.name}: writable (mode {oct(os.stat(path).st_mode & 0o777)})")
    n = sum(1 for m in manifest.members if m.kind == "model")
    return Check("models", not problems, "; ".join(problems) or f"{n} model(s) match the manifest")


def unit_exposure(layout: Layout) -> tuple[float | None, str]:
    if shutil.which("systemd-analyze") is None:
        return None, "systemd-analyze not found"
    argv = ["systemd-analyze", "security", "--offline=yes", "sealfuse-watch.service"]
    if layout.root != Path("/"):
        argv.insert(3, f"--root={layout.root}")
    result = _run(argv)
    text = (result.stdout + result.stderr) if result else ""
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    return (float(m.group(1)), "") if m else (None, text.strip()[-300:])


def check_unit(layout: Layout) -> Check:
    if not layout.unit_file.exists():
        return Check("unit", False, f"{layout.unit_file} missing")
    score, err = unit_exposure(layout)
    if score is None:
        return Check("unit", None, f"exposure not measured: {err}")
    return Check("unit", score <= MAX_EXPOSURE,
                 f"systemd-analyze security exposure {score} (gate {MAX_EXPOSURE})")


def check_space(layout: Layout) -> Check:
    parts = []
    ok = True
    for path in (layout.opt, layout.var):
        probe = path if path.exists() else layout.root
        free = shutil.disk_usage(probe).free
        ok = ok and free >= MIN_FREE_BYTES
        parts.append(f"{path}: {free >> 20} MiB free")
    return Check("space", ok, "; ".join(parts) + f" (want >= {MIN_FREE_BYTES >> 20} MiB)")


def check_clock(layout: Layout, now: dt.datetime | None = None) -> Check:
    from sealfuse.verifier.errors import VerificationError
    from sealfuse.verifier.model import Manifest

    now = now or dt.datetime.now(dt.UTC)
    try:
        manifest = Manifest.from_bytes(read_regular_bytes(layout.current / "manifest.json"))
    except (OSError, ValueError, VerificationError) as exc:
        return Check("clock", False, f"cannot read the release manifest: {exc}")
    behind = clock_behind(manifest.created, now)
    if behind is not None:
        return Check("clock", False, f"{behind.reason}: {behind.message}")
    if now >= manifest.expires:
        return Check("clock", False, f"the running release expired at "
                                     f"{manifest.expires:%Y-%m-%dT%H:%M:%SZ}; install a newer bundle")
    left = manifest.expires - now
    note = " (bring a new bundle soon)" if left.days < EXPIRY_WARNING_DAYS else ""
    return Check("clock", True, f"within the manifest's validity; expires in {left.days} days{note}")


def check_provenance(layout: Layout, now: dt.datetime | None = None) -> Check:
    """The C2PA signing certificate the release carries: present, unexpired, not near expiry."""
    from cryptography import x509

    chain = layout.current / "provenance" / "chain.pem"
    if not chain.is_file():
        return Check("provenance", None, "no C2PA signing certificate in this release: outputs are UNSIGNED "
                                         "(build the bundle with --provenance)")
    now = now or dt.datetime.now(dt.UTC)
    try:
        leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    except (OSError, ValueError) as exc:
        return Check("provenance", False, f"cannot read {chain}: {exc}")
    end = leaf.not_valid_after_utc
    who = leaf.subject.rfc4514_string()
    if now >= end:
        return Check("provenance", False, f"signing certificate {who} expired at {end:%Y-%m-%dT%H:%M:%SZ}: "
                                          "outputs read as invalid; install a bundle with a new certificate")
    left = (end - now).days
    note = (f" WARNING: it expires in {left} days; bring a bundle with a new appliance certificate "
            "(sealfuse provenance init)" if left < EXPIRY_WARNING_DAYS else "")
    return Check("provenance", True, f"outputs signed as {who}, certificate valid for {left} more days.{note}")


def check_service(layout: Layout, systemd: Systemd) -> Check:
    if not systemd.available:
        return Check("service", None, "not checked (no systemd for this root)")
    props = systemd.show("ActiveState", "SubState", "NRestarts", "StatusText")
    return Check("service", props.get("ActiveState") == "active",
                 f"{props.get('ActiveState')}/{props.get('SubState')}, restarts "
                 f"{props.get('NRestarts')}, status {props.get('StatusText')!r}")


def doctor(layout: Layout | None = None, systemd: Systemd | None = None) -> list[Check]:
    layout = layout or Layout()
    systemd = systemd or systemd_for(layout)
    record = InstallRecord.load(layout)
    if record.current is None or layout.current_version() is None:
        return [Check("release", False, "sealfuse is not installed")]
    checks = [Check("release", True, f"{record.current} at {layout.release(record.current)}")]
    checks += [check_service(layout, systemd), check_providers(layout), check_gpu(layout),
               check_models(layout), check_unit(layout), check_space(layout),
               check_clock(layout), check_provenance(layout)]
    return checks
