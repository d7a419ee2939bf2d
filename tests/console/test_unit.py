"""The console's systemd unit: serves HTTP but otherwise sandboxed like the watch service; exposure
is checked by hardening/gate.sh (tests/install/test_units.py), here what its sandbox must say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "sealfuse-console.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and line[0] not in "#;[":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_console_unit_is_a_producer_that_writes_only_its_state_and_the_inbox() -> None:
    d = directives()
    assert d["User"] == ["sealfuse-console"] and d["SupplementaryGroups"] == ["sealfuse"]
    assert d["ExecStart"][0].split()[1:] == ["console", "--config", "/etc/sealfuse/console.toml"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["ReadWritePaths"] == ["/var/lib/sealfuse/spool/inbox"]
    assert d["StateDirectory"] == ["sealfuse/console"]
    # no model file is visible: a read-only tmpfs over the models with only the lock bound in
    assert d["TemporaryFileSystem"] == ["/opt/sealfuse/current/models:ro"]
    assert d["BindReadOnlyPaths"] == ["-/opt/sealfuse/current/models/models.lock.json"]
    for hidden in ("/var/lib/sealfuse/state", "/var/lib/sealfuse/audit", "/var/lib/sealfuse/spool/work"):
        assert f"-{hidden}" in d["InaccessiblePaths"][0].split()


def test_console_unit_allows_only_what_serving_http_needs() -> None:
    d = directives()
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["localhost"]
    assert "PrivateNetwork" not in d
    for key, value in [("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""), ("PrivateDevices", "yes"),
                       ("LimitCORE", "0"), ("UMask", "0077"), ("MemoryDenyWriteExecute", "yes"),
                       ("PrivateUsers", "yes"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:
        assert d[key] == [value], key


def test_console_unit_scores_at_most_two_in_the_gate() -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    r = subprocess.run(["bash", str(REPO / "hardening" / "gate.sh")], capture_output=True, text=True, timeout=120)
    m = re.search(r"^PASS sealfuse-console\.service exposure=([0-9.]+)$", r.stdout, re.M)
    assert m, r.stdout
    assert float(m.group(1)) <= 2.0
    print("sealfuse-console.service exposure:", m.group(1))


def test_sysusers_puts_the_console_in_the_producers_group() -> None:
    lines = (REPO / "systemd" / "sysusers.d" / "sealfuse.conf").read_text().splitlines()
    assert any(re.match(r"^u sealfuse-console\s", x) for x in lines)
    assert "m sealfuse-console sealfuse" in lines


def test_installer_enables_the_console_only_when_its_config_says_so(tmp_path: Path) -> None:
    from sealfuse.appliance.release import Layout, OfflineSystemd
    from sealfuse.appliance.units import CONSOLE_UNIT, console_enabled, sync_console

    if not shutil.which("systemctl"):
        pytest.skip("systemctl is not installed")
    layout = Layout(root=tmp_path)
    layout.unit_dir.mkdir(parents=True)
    (layout.unit_dir / CONSOLE_UNIT).write_bytes(UNIT.read_bytes())
    link = layout.unit_dir / "multi-user.target.wants" / CONSOLE_UNIT
    assert not console_enabled(layout)
    assert sync_console(layout, OfflineSystemd(layout)) == "disabled" and not link.exists()
    conf = tmp_path / "etc" / "sealfuse" / "console.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[console]\nenabled = true\n")
    assert console_enabled(layout)
    assert sync_console(layout, OfflineSystemd(layout)) == "enabled"
    assert link.is_symlink()
    conf.write_text("[console]\nenabled = false\n")
    assert sync_console(layout, OfflineSystemd(layout)) == "disabled" and not link.exists()


def test_deleting_media_unlinks_only_the_consoles_own_drops_and_asks_the_daemon_for_the_rest(
        tmp_path: Path) -> None:
    import json

    from sealfuse.appliance.console.jobs import JobRecord, Spool

    root = tmp_path / "spool"
    for d in ("inbox", "outbox", "failed", "status"):
        (root / d).mkdir(parents=True)
    spool = Spool(root, tmp_path / "state", max_upload_mb=1, max_pixels=1000)
    spool.setup()
    (root / "inbox" / "web-1-target.png").write_bytes(b"t")  # never claimed: the console's own file
    loose = JobRecord(ref="web-1", user="alice", created="2026-01-01T00:00:00Z", label=None,
                      files={"target": {"name": "t.png", "drop": "web-1-target.png"}}, options={},
                      manifest="web-1.job.json")
    assert spool.delete_media(loose, "console:alice") == (["inbox/web-1-target.png"], False)
    assert loose.media_deleted and not (root / "inbox" / "web-1-target.png").exists()
    assert not list((root / "inbox").glob("*.cancel.json"))

    (root / "outbox" / "j2").mkdir()
    (root / "outbox" / "j2" / "out.png").write_bytes(b"o")
    done = JobRecord(ref="web-2", user="alice", created="2026-01-01T00:00:00Z", label=None, files={},
                     options={}, manifest="web-2.job.json", job_id="j2")
    assert spool.delete_media(done, "console:alice") == ([], True)
    assert (root / "outbox" / "j2" / "out.png").exists()  # the daemon's folder: not touched here
    request = json.loads((root / "inbox" / "web-2.cancel.json").read_text())
    assert request == {"version": 1, "job_id": "j2", "delete_media": True, "requested_by": "console:alice"}
    assert done.media_delete_requested and not done.media_deleted
    assert spool.expired(0.0001) == []  # a requested deletion is not asked again by the purge
