"""Attack battery: every tampered bundle is rejected with its own error class and extracts nothing."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sealfuse.verifier import extract_bundle, verify_bundle
from sealfuse.verifier.errors import VerificationError
from tests.bundle import factory as F


@pytest.mark.parametrize("attack", F.ATTACKS, ids=[a.name for a in F.ATTACKS])
def test_tampered_bundle_is_rejected_with_its_error_class_and_extracts_nothing(
        attack: Any, tmp_path: Path, factory_module: ModuleType) -> None:
    factory = factory_module.BundleFactory(tmp_path / "f")
    bundle = attack.make(factory)
    kwargs = {"now": F.NOW, **attack.verify_kwargs}
    with pytest.raises(VerificationError) as info:
        verify_bundle(bundle, factory.trust, **kwargs)
    assert type(info.value) is attack.error
    assert info.value.exit_code == attack.error.exit_code
    assert info.value.evidence, "every rejection carries its evidence"

    dest = tmp_path / "dest"
    with pytest.raises(attack.error):
        extract_bundle(bundle, factory.trust, dest, **kwargs)
    assert not dest.exists()


def test_attack_battery_covers_every_listed_attack() -> None:
    names = {a.name for a in F.ATTACKS}
    required = {
        "flipped-byte-model", "flipped-byte-wheel", "flipped-byte-manifest",
        "swapped-signature-files", "signature-by-untrusted-key", "fewer-than-k-signatures",
        "same-key-twice-towards-k", "expired-manifest", "rollback-below-floor",
        "member-not-in-manifest", "member-missing", "duplicated-member", "absolute-path",
        "dotdot-path", "symlink-member", "hardlink-member", "device-member", "trailing-data",
        "truncated-archive", "size-that-lies",
    }
    assert required <= names
