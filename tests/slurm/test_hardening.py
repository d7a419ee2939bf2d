"""The Slurm backend's drop-in opens only TCP/IP to the controller, and the security gate scores it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

HARDENING = Path(__file__).resolve().parents[2] / "hardening"
DROPIN = HARDENING / "slurm.conf"


def _values(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in DROPIN.read_text().splitlines() if line.startswith(f"{key}=")]


def test_dropin_opens_only_inet_sockets_to_the_controller() -> None:
    assert _values("PrivateNetwork") == ["no"]
    assert _values("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert _values("IPAddressDeny") == ["any"]
    (allow,) = _values("IPAddressAllow")
    assert allow and allow not in ("any", "localhost", "0.0.0.0/0", "::/0")
    # nothing else of the unit's sandbox is loosened
    keys = {line.split("=", 1)[0] for line in DROPIN.read_text().splitlines()
            if "=" in line and not line.startswith("#")}
    assert keys == {"PrivateNetwork", "IPAddressDeny", "IPAddressAllow", "RestrictAddressFamilies"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_gate_scores_the_unit_with_the_slurm_dropin() -> None:
    r = subprocess.run([str(HARDENING / "gate.sh")], capture_output=True, text=True, timeout=180)
    m = re.search(r"^(PASS|FAIL) sealfuse-watch\.service\+slurm\.conf exposure=([0-9.]+)$", r.stdout, re.M)
    assert m, r.stdout + r.stderr
    assert m.group(1) == "PASS" and float(m.group(2)) <= 1.0
    print("sealfuse-watch.service+slurm.conf exposure:", m.group(2))
