"""The shipped units: the security gate (exposure and verify), comments on every directive,
and the sandbox settings the architecture requires."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.install.installlib import HARDENING_DIR, SYSTEMD_DIR, UNIT, need

GATE = HARDENING_DIR / "gate.sh"
LINE = re.compile(r"^(PASS|FAIL) (\S+) exposure=([0-9.]+)")


def _directives(path: Path) -> dict[str, list[str]]:
    """`Key` -> every value it is given in the unit (multi-valued keys keep their order)."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def _run_gate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    need("systemd-analyze")
    return subprocess.run([str(GATE), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_gate_passes_every_unit_alone_and_with_each_dropin() -> None:
    result = _run_gate()
    assert result.returncode == 0, result.stdout + result.stderr
    scores = {m.group(2): float(m.group(3)) for m in map(LINE.match, result.stdout.splitlines()) if m}
    dropins = ("", "+gpu.conf", "+memory.conf", "+apparmor.conf", "+slurm.conf")
    assert set(scores) == {f"{unit}{d}" for unit in ("sealfuse-watch.service", "sealfuse-console.service")
                           for d in dropins}
    # the watch service has no network at all; the console serves HTTP and states its own 2.0
    assert all(score <= 1.0 for label, score in scores.items() if label.startswith("sealfuse-watch")), scores
    assert all(score <= 2.0 for score in scores.values()), scores
    print("exposure:", scores)


def test_gate_fails_a_unit_with_an_unknown_key_and_weak_sandbox(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "weak.service").write_text("[Service]\nExecStart=/usr/bin/weak\nFrobnicate=yes\n")
    result = _run_gate(str(units), str(tmp_path / "no-dropins"))
    assert result.returncode == 1
    assert "FAIL weak.service verify:" in result.stdout
    assert "Unknown key 'Frobnicate'" in result.stdout
    score = float(re.search(r"FAIL weak.service exposure=([0-9.]+)", result.stdout).group(1))
    assert score > 1.0


def test_gate_max_exposure_is_configurable(tmp_path: Path) -> None:
    # The real unit scores above 0.0, so a max of 0.0 must fail it.
    result = _run_gate(env={"SEALFUSE_GATE_MAX_EXPOSURE": "0.0"})
    assert result.returncode == 1
    assert "FAIL sealfuse-watch.service exposure=" in result.stdout


def test_every_directive_sits_under_a_comment_saying_why() -> None:
    for path in [*SYSTEMD_DIR.glob("*.service"), *HARDENING_DIR.glob("*.conf")]:
        commented = False
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("["):
                commented = False
            elif line.startswith("#"):
                commented = True
            else:
                assert commented, f"{path.name}:{n}: {line!r} has no comment above it"


def test_unit_runs_the_agreed_command_as_a_notify_service() -> None:
    d = _directives(UNIT)
    argv = shlex.split(d["ExecStart"][0])
    assert argv[:2] == ["/opt/sealfuse/current/venv/bin/sealfuse", "watch"]
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert opts == {
        "--spool": "/var/lib/sealfuse/spool", "--config": "/etc/sealfuse/watch.toml",
        "--models-dir": "/opt/sealfuse/current/models", "--state-dir": "/var/lib/sealfuse/state",
        "--audit-log": "/var/lib/sealfuse/audit/audit.jsonl",
        "--metrics-file": "/var/lib/sealfuse/metrics/sealfuse.prom",
    }
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"] and d["OOMPolicy"] == ["continue"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["User"] == ["sealfuse"]


@pytest.mark.parametrize(("key", "value"), [
    ("PrivateNetwork", "yes"), ("IPAddressDeny", "any"), ("RestrictAddressFamilies", "AF_UNIX"),
    ("ProtectSystem", "strict"), ("ReadOnlyPaths", "/opt/sealfuse"), ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""), ("LimitCORE", "0"),
    ("UMask", "0077"), ("RuntimeDirectory", "sealfuse"), ("ProtectHome", "yes"),
    ("ProtectProc", "invisible"), ("PrivateDevices", "yes"), ("DevicePolicy", "closed"),
    ("RestrictNamespaces", "yes"), ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"),
    ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
    ("MemorySwapMax", "0"),
])
def test_unit_sets_required_hardening(key: str, value: str) -> None:
    assert _directives(UNIT).get(key) == [value]


def test_unit_writes_only_to_spool_state_audit_and_metrics() -> None:
    paths = " ".join(_directives(UNIT)["ReadWritePaths"]).split()
    assert sorted(paths) == sorted(f"/var/lib/sealfuse/{d}" for d in
                                   ("spool", "state", "audit", "metrics"))


def test_syscall_filter_denies_privileged_and_resource_calls() -> None:
    filters = _directives(UNIT)["SystemCallFilter"]
    assert filters[0] == "@system-service"
    denied = filters[1]
    assert denied.startswith("~")
    assert {"@privileged", "@resources", "@mount", "@debug"} <= set(denied[1:].split())


def test_unit_parses_as_ini_with_service_and_install_sections() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_shipped_tree_contains_units_sysusers_and_tmpfiles() -> None:
    names = sorted(p.relative_to(SYSTEMD_DIR).as_posix() for p in SYSTEMD_DIR.rglob("*")
                   if p.is_file())
    assert names == ["sealfuse-console.service", "sealfuse-watch.service", "sysusers.d/sealfuse.conf",
                     "tmpfiles.d/sealfuse.conf"]
