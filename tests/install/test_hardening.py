"""Drop-ins, the AppArmor profile, and the sysusers/tmpfiles layout applied to a scratch root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.install.installlib import HARDENING_DIR, SYSTEMD_DIR, need

PROFILE = HARDENING_DIR / "apparmor" / "sealfuse-engine"


def _values(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in path.read_text().splitlines()
            if line.startswith(f"{key}=")]


def test_apparmor_profile_parses() -> None:
    parser = need("apparmor_parser")
    result = subprocess.run([parser, "-Q", "-K", str(PROFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_apparmor_parser_rejects_a_broken_copy_of_the_profile(tmp_path: Path) -> None:
    parser = need("apparmor_parser")
    broken = tmp_path / "sealfuse-engine"
    broken.write_text(PROFILE.read_text().replace("deny network inet,", "deny network inet"))
    result = subprocess.run([parser, "-Q", "-K", str(broken)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0


def test_apparmor_profile_denies_ip_networks_and_writes_to_the_release() -> None:
    text = PROFILE.read_text()
    for rule in ("deny network inet,", "deny network inet6,", "deny /opt/sealfuse/** wl,",
                 "deny /root/** rwklx,"):
        assert rule in text


def test_gpu_dropin_admits_nvidia_nodes_and_keeps_device_policy_closed() -> None:
    gpu = HARDENING_DIR / "gpu.conf"
    allow = _values(gpu, "DeviceAllow")
    assert "/dev/nvidiactl rw" in allow and "/dev/nvidia-uvm rw" in allow
    assert "char-nvidia-frontend rw" in allow  # /dev/nvidia0..N
    assert _values(gpu, "PrivateDevices") == ["no"]
    assert _values(gpu, "DevicePolicy") == ["closed"]
    assert _values(gpu, "ProcSubset") == ["all"]


def test_memory_dropin_sets_a_hard_limit_and_no_swap() -> None:
    mem = HARDENING_DIR / "memory.conf"
    assert _values(mem, "MemoryMax") and _values(mem, "MemorySwapMax") == ["0"]


def test_sysusers_and_tmpfiles_create_user_and_spool_with_documented_modes(tmp_path: Path) -> None:
    sysusers, tmpfiles = need("systemd-sysusers"), need("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc/sysusers.d").mkdir(parents=True)
    (root / "etc/tmpfiles.d").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    shutil.copy(SYSTEMD_DIR / "sysusers.d/sealfuse.conf", root / "etc/sysusers.d/")
    shutil.copy(SYSTEMD_DIR / "tmpfiles.d/sealfuse.conf", root / "etc/tmpfiles.d/")
    subprocess.run([sysusers, f"--root={root}", "sealfuse.conf"], check=True, timeout=60,
                   capture_output=True)
    entry = next(line for line in (root / "etc/passwd").read_text().splitlines()
                 if line.startswith("sealfuse:"))
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert shell == "/usr/sbin/nologin" and int(uid) < 1000
    subprocess.run([tmpfiles, f"--root={root}", "--create", "sealfuse.conf"], check=True,
                   timeout=60, capture_output=True)
    expect = {
        "var/lib/sealfuse/spool": 0o750, "var/lib/sealfuse/spool/inbox": 0o3770,
        "var/lib/sealfuse/spool/work": 0o700, "var/lib/sealfuse/spool/outbox": 0o2750,
        "var/lib/sealfuse/spool/failed": 0o2750, "var/lib/sealfuse/state": 0o700,
        "var/lib/sealfuse/audit": 0o700, "var/lib/sealfuse/audit/audit.jsonl": 0o640,
        "var/lib/sealfuse/metrics": 0o755,
    }
    for rel, mode in expect.items():
        st = os.stat(root / rel)
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert (st.st_uid, st.st_gid) == (int(uid), int(gid)), rel
    for rel in ("opt/sealfuse/releases", "etc/sealfuse"):
        st = os.stat(root / rel)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
