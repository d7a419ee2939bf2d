"""Helpers the installer and unit tests share: repository paths, a tool check, trust files and a
systemd stand-in for installs below --root (imported as tests.install.installlib)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.appliance.release import Layout, OfflineSystemd, StartResult

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
HARDENING_DIR = REPO / "hardening"
UNIT = SYSTEMD_DIR / "sealfuse-watch.service"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def write_trust(path: Path, keys: list[Ed25519PrivateKey], threshold: int = 1,
                version: int = 1) -> Path:
    from sealfuse.verifier.trust import TrustedKey, make_trust

    trust = make_trust("sealfuse", [TrustedKey.from_public(k.public_key(), f"signer{i}")
                                    for i, k in enumerate(keys)], threshold, version)
    trust.write(path)
    return path


class FakeSystemd(OfflineSystemd):
    """systemd for an install below --root: a release comes up unless its payload carries
    config/fail-start (a real file in the real release tree). Records every call."""

    available = True

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.calls: list[str] = []

    def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    def stop(self) -> None:
        self.calls.append("stop")

    def restart(self, timeout: float, settle: float) -> StartResult:
        version = self.layout.current_version()
        self.calls.append(f"restart {version}")
        if (self.layout.current / "payload" / "config" / "fail-start").exists():
            return StartResult(False, "exited before READY (status=2)")
        return StartResult(True, "active, main PID 4242")

    def show(self, *props: str) -> dict[str, str]:
        return {"ActiveState": "active", "SubState": "running", "MainPID": "4242",
                "NRestarts": "0", "StatusText": "idle", "Result": "success"}

    def journal_tail(self, lines: int = 15) -> str:
        return "sealfuse watch: models missing"
