"""Provenance fixtures: a studio CA with an appliance certificate, a second unrelated CA, and names
that must never appear inside a manifest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sealfuse.bundle.provenance import init
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.provenance import Provenance, ProvenanceConfig
from tests.starter_models import add_starter


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`sealfuse provenance init` output: ca.pem, ca.key, appliance/{chain.pem,signing.key} (Ed25519)."""
    res = init(tmp_path_factory.mktemp("pki") / "studio", organization="Test Studio", appliance="test appliance")
    return SimpleNamespace(ca=res.ca_cert, ca_key=res.ca_key, chain=res.chain, key=res.key)


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another studio's CA (ES256): not the one that issued the appliance certificate."""
    return init(tmp_path_factory.mktemp("pki") / "other", organization="Other Studio", appliance="x",
                alg="es256").ca_cert


@pytest.fixture(scope="session")
def signing(pki: SimpleNamespace) -> Provenance:
    return Provenance(ProvenanceConfig(pki.key, pki.chain, require=True))


@pytest.fixture(scope="session")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> SwapOptions:
    return SwapOptions(models_dir=add_starter(tmp_path_factory.mktemp("no-models")), execution_providers=("cpu",),
                       execution_threads=2)


@pytest.fixture
def private_names(tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> SimpleNamespace:
    """The sample photos under names that must not leak into any manifest."""
    d = tmp_path / "inputs"
    d.mkdir()
    src = d / "alice-private-source.png"
    tgt = d / "bob-confidential-target.jpg"
    src.write_bytes(hanks_png.read_bytes())
    tgt.write_bytes(t1_jpg.read_bytes())
    return SimpleNamespace(source=src, target=tgt)
