"""Fixtures for the installer and unit tests: repository paths, the sealfuse wheel, signing keys,
a signed-bundle factory, and a systemd stand-in for installs below --root."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.appliance.release import Layout, OfflineSystemd, StartResult
from tests.bundle.factory import make_install_root
from tests.system.wheelhouse import build_sealfuse_wheel

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
HARDENING_DIR = REPO / "hardening"
UNIT = SYSTEMD_DIR / "sealfuse-watch.service"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty system tree for `install --root`, with a copy of this host's user database."""
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    return make_install_root(tmp_path / "root")


@pytest.fixture(scope="session")
def sealfuse_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheelhouse holding only the sealfuse wheel (no deps: fast venvs for --root tests)."""
    house = tmp_path_factory.mktemp("wheelhouse") / "wheels"
    build_sealfuse_wheel(house)
    return house


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_trust(path: Path, keys: list[Ed25519PrivateKey], threshold: int = 1,
                version: int = 1) -> Path:
    from sealfuse.verifier.trust import TrustedKey, make_trust

    trust = make_trust("sealfuse", [TrustedKey.from_public(k.public_key(), f"signer{i}")
                                    for i, k in enumerate(keys)], threshold, version)
    trust.write(path)
    return path


@pytest.fixture
def trust_file(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    return write_trust(tmp_path / "trust.json", [signing_key])


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, sealfuse_wheelhouse: Path,
                signing_key: Ed25519PrivateKey) -> BundleFactory:
    """make_bundle(version, *, fail_start=False, key=..., python_version="3.11", extra_wheels=())
    -> a signed bundle built by the real builder from this checkout's units and hardening."""
    from sealfuse.bundle.build import BuildInputs, build_bundle
    from sealfuse.bundle.sign import sign_bundle

    models = tmp_path / "models-src"
    models.mkdir(exist_ok=True)
    (models / "detector-standin.onnx").write_bytes(b"stand-in model bytes, never loaded here\n")

    def factory(version: str, *, fail_start: bool = False,
                key: Ed25519PrivateKey | None = None, python_version: str = "3.11",
                extra_wheels: tuple[Path, ...] = ()) -> Path:
        out = tmp_path / f"bundles-{version}-{len(list(tmp_path.glob('bundles-*')))}"
        wheels = out / "wheels"
        wheels.mkdir(parents=True)
        for w in [*sealfuse_wheelhouse.glob("*.whl"), *extra_wheels]:
            shutil.copy(w, wheels)
        configs = []
        if fail_start:
            marker = out / "fail-start"
            marker.write_text("this release refuses to come up (installer test)\n")
            configs.append(marker)
        result = build_bundle(BuildInputs(
            version=version, out_dir=out, wheelhouse=wheels, models_dir=models,
            units_dir=SYSTEMD_DIR, hardening_dir=HARDENING_DIR, configs=configs,
            licences={"detector-standin.onnx": "Apache-2.0"},
            python_version=python_version, source_date_epoch=1_700_000_000 + int(version) * 60,
            expires_days=3650))
        sign_bundle(result.path, key or signing_key)
        return result.path

    return factory


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
