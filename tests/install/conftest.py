"""Fixtures for the installer and unit tests: repository paths, the sealfuse wheel, signing keys,
a signed-bundle factory, and a systemd stand-in for installs below --root."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.bundle.factory import make_install_root
from tests.install.installlib import HARDENING_DIR, SYSTEMD_DIR, need, write_trust
from tests.system.wheelhouse import build_sealfuse_wheel


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
