"""Keys and trust files: keygen output, trust schema, and k-of-n rotation chains."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.cli import main
from sealfuse.verifier import load_trust, verify_bundle
from sealfuse.verifier.errors import (
    OutputExistsError,
    RotationError,
    TrustFileError,
    UnsignedManifestError,
)
from sealfuse.verifier.keys import KeyFormatError, keyid_of, load_private_key, raw_public
from sealfuse.verifier.trust import Trust, TrustedKey, accept_chain, accept_rotation, make_trust

NOW = "2026-06-01T00:00:00Z"


def _keygen(tmp_path: Path, name: str, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / name), "--name", name,
                                       "--json", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_keygen_writes_private_key_0600_and_prints_sha256_key_id(tmp_path: Path) -> None:
    info = _keygen(tmp_path, "alice")
    priv = tmp_path / "alice"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = load_private_key(priv)
    assert info["keyid"] == hashlib.sha256(raw_public(key.public_key())).hexdigest()
    assert info["short"] == str(info["keyid"])[:16]
    assert (tmp_path / "alice.pub").read_text().startswith("ssh-ed25519 ")
    assert (tmp_path / "alice.pub").read_text().split()[2] == "alice"


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    _keygen(tmp_path, "alice")
    before = (tmp_path / "alice").read_bytes()
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "alice"), "--json"])
    assert result.exit_code == OutputExistsError.exit_code
    assert json.loads(result.output)["reason"] == "output_exists"
    assert (tmp_path / "alice").read_bytes() == before


def test_keygen_passphrase_encrypts_the_private_key(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    _keygen(tmp_path, "bob", "--passphrase-file", str(pw))
    with pytest.raises(KeyFormatError):
        load_private_key(tmp_path / "bob", None)
    with pytest.raises(KeyFormatError):
        load_private_key(tmp_path / "bob", b"wrong")
    assert isinstance(load_private_key(tmp_path / "bob", b"correct horse"), Ed25519PrivateKey)


def test_trust_create_from_keygen_public_keys_and_show(tmp_path: Path) -> None:
    for n in ("alice", "bob", "carol"):
        _keygen(tmp_path, n)
    out = tmp_path / "trust.json"
    args = ["trust", "create", "--out", str(out), "--threshold", "2"]
    for n in ("alice", "bob", "carol"):
        args += ["--key", str(tmp_path / f"{n}.pub")]
    assert CliRunner().invoke(main, args).exit_code == 0
    trust = load_trust(out)
    assert trust.threshold == 2 and len(trust.keys) == 3 and trust.product == "sealfuse"
    assert sorted(k.name for k in trust.keys.values()) == ["alice", "bob", "carol"]
    shown = CliRunner().invoke(main, ["trust", "show", str(out), "--json"])
    assert json.loads(shown.output)["threshold"] == 2


@pytest.mark.parametrize("threshold", [0, 4])
def test_threshold_outside_one_to_n_is_refused(threshold: int) -> None:
    keys = [TrustedKey.from_public(Ed25519PrivateKey.generate().public_key()) for _ in range(3)]
    with pytest.raises(TrustFileError):
        make_trust("sealfuse", keys, threshold)


def test_trust_file_whose_key_id_does_not_match_its_key_is_refused(tmp_path: Path) -> None:
    trust = make_trust("sealfuse", [TrustedKey.from_public(
        Ed25519PrivateKey.generate().public_key())], 1)
    data = trust.to_json()
    data["signed"]["keys"][0]["keyid"] = "0" * 64
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TrustFileError) as info:
        load_trust(path)
    assert info.value.evidence["actual"] == "0" * 64


def _gen(n: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(n)]


def _trust(keys: list[Ed25519PrivateKey], k: int, version: int) -> Trust:
    return make_trust("sealfuse", [TrustedKey.from_public(x.public_key()) for x in keys], k,
                      version)


def test_chain_of_two_rotations_is_accepted_when_each_has_the_old_threshold() -> None:
    a, b, c, d, e = _gen(5)
    t1 = _trust([a, b, c], 2, 1)
    t2 = _trust([c, d, e], 2, 2).with_signature(a).with_signature(b)
    t3 = _trust([e], 1, 3).with_signature(d).with_signature(e)
    last = accept_chain(t1, [t2, t3])
    assert last.version == 3
    assert set(last.keys) == {keyid_of(e.public_key())}


def _ids(*keys: Ed25519PrivateKey) -> list[str]:
    return sorted(keyid_of(k.public_key()) for k in keys)


def test_rotation_signed_by_fewer_than_the_threshold_is_refused() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 2).with_signature(a)
    with pytest.raises(RotationError) as info:
        accept_rotation(_trust([a, b, c], 2, 1), t2)
    assert info.value.evidence["valid_keyids"] == _ids(a)
    assert info.value.evidence["threshold"] == 2


def test_rotation_signed_only_by_its_own_new_keys_is_refused() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 2).with_signature(d).with_signature(e)
    with pytest.raises(RotationError) as info:
        accept_rotation(_trust([a, b, c], 2, 1), t2)
    assert info.value.evidence["valid_keyids"] == []
    assert info.value.evidence["untrusted_keyids"] == _ids(d, e)


def test_rotation_signature_repeated_by_one_key_counts_once() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 2).with_signature(a)
    sig = t2.signatures[0]
    doubled = Trust(t2.product, t2.version, t2.threshold, t2.keys, None, (sig, sig))
    with pytest.raises(RotationError) as info:
        accept_rotation(_trust([a, b, c], 2, 1), doubled)
    assert info.value.evidence["valid_keyids"] == _ids(a)  # one key, however many copies


def test_rotation_that_does_not_raise_the_version_is_refused_even_when_fully_signed() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 1).with_signature(a).with_signature(b)
    with pytest.raises(RotationError) as info:
        accept_rotation(_trust([a, b, c], 2, 1), t2)
    assert info.value.evidence == {"expected_above": 1, "actual": 1}


def test_rotation_edited_after_signing_has_only_invalid_signatures() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 2).with_signature(a).with_signature(b)
    edited = Trust(t2.product, t2.version, 1, t2.keys, None, t2.signatures)  # threshold 2 -> 1
    with pytest.raises(RotationError) as info:
        accept_rotation(_trust([a, b, c], 2, 1), edited)
    assert info.value.evidence["valid_keyids"] == []
    assert info.value.evidence["invalid_keyids"] == _ids(a, b)
    accept_rotation(_trust([a, b, c], 2, 1), t2)  # the unedited file is a valid rotation


def test_second_hop_signed_by_keys_the_first_hop_retired_is_refused() -> None:
    a, b, c, d, e = _gen(5)
    t2 = _trust([d, e], 2, 2).with_signature(a).with_signature(b)
    t3 = _trust([c], 1, 3).with_signature(a).with_signature(b)  # a, b no longer trusted
    with pytest.raises(RotationError) as info:
        accept_chain(_trust([a, b, c], 2, 1), [t2, t3])
    assert info.value.evidence["valid_keyids"] == []
    assert info.value.evidence["untrusted_keyids"] == _ids(a, b)
    assert accept_chain(_trust([a, b, c], 2, 1), [t2]).version == 2  # the first hop is fine


def test_signing_a_trust_file_twice_with_one_key_is_refused() -> None:
    (a,) = _gen(1)
    with pytest.raises(RotationError):
        _trust([a], 1, 2).with_signature(a).with_signature(a)


def test_rotation_via_cli_replaces_the_pinned_trust_and_new_keys_then_verify(
        factory: Any, tmp_path: Path) -> None:
    """Bundles signed by the new keys verify only after the rotation is accepted."""
    new_keys = _gen(2)
    old_trust = factory.trust
    pinned = factory.trust_path
    candidate = tmp_path / "trust-v2.json"
    _trust(new_keys, 2, 2).write(candidate)
    runner = CliRunner()
    for i in (0, 1):
        res = runner.invoke(main, ["trust", "sign", str(candidate), "--key",
                                   str(factory.key_path(i))])
        assert res.exit_code == 0, res.output
    bundle = factory.build(signers=(), extra_keys=new_keys)
    with pytest.raises(UnsignedManifestError):
        verify_bundle(bundle, old_trust, now=NOW)
    res = runner.invoke(main, ["trust", "accept", str(pinned), str(candidate), "--replace"])
    assert res.exit_code == 0, res.output
    assert load_trust(pinned).version == 2
    assert len(verify_bundle(bundle, load_trust(pinned), now=NOW).signers) == 2


def test_cli_refuses_rotation_signed_by_one_of_two_with_exit_11(factory: Any,
                                                                tmp_path: Path) -> None:
    candidate = tmp_path / "trust-v2.json"
    _trust(_gen(2), 1, 2).write(candidate)
    runner = CliRunner()
    runner.invoke(main, ["trust", "sign", str(candidate), "--key",
                         str(factory.key_path(0))])
    pinned = factory.trust_path
    before = pinned.read_bytes()
    res = runner.invoke(main, ["trust", "accept", str(pinned), str(candidate), "--replace"])
    assert res.exit_code == RotationError.exit_code == 11
    assert pinned.read_bytes() == before


def test_sigstore_trusted_root_may_be_a_path_relative_to_the_trust_file(tmp_path: Path) -> None:
    root = {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}
    (tmp_path / "trusted_root.json").write_text(json.dumps(root))
    trust = make_trust("sealfuse", [TrustedKey.from_public(
        Ed25519PrivateKey.generate().public_key())], 1)
    data = trust.to_json()
    data["signed"]["sigstore"] = {"identity": "release@example.org",
                                  "issuer": "https://accounts.example.org",
                                  "trusted_root": "trusted_root.json"}
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(data))
    loaded = load_trust(path)
    assert loaded.sigstore is not None and dict(loaded.sigstore.trusted_root) == root
    assert loaded.sigstore.required
    (tmp_path / "trusted_root.json").unlink()
    with pytest.raises(TrustFileError):
        load_trust(path)


def test_keygen_refuses_an_empty_passphrase_file_instead_of_writing_the_key_unencrypted(
        tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("\n")
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"),
                                       "--passphrase-file", str(pw), "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["reason"] == "unusable_key"
    assert not (tmp_path / "k").exists() and not (tmp_path / "k.pub").exists()


def test_keygen_output_name_too_long_is_a_named_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / ("k" * 300)), "--json"])
    assert result.exit_code == OutputExistsError.exit_code, result.output
    assert json.loads(result.output)["reason"] == "output_exists"


def _one_key_trust(tmp_path: Path) -> Path:
    _keygen(tmp_path, "alice")
    out = tmp_path / "trust.json"
    result = CliRunner().invoke(main, ["trust", "create", "--out", str(out), "--threshold", "1",
                                       "--key", str(tmp_path / "alice.pub")])
    assert result.exit_code == 0, result.output
    return out


def test_trust_exports_never_overwrite_their_input_nor_replace_a_link_or_fifo(
        tmp_path: Path) -> None:
    import os
    trust_file = _one_key_trust(tmp_path)
    before = trust_file.read_bytes()
    outside = tmp_path / "outside"
    (tmp_path / "link").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "same").symlink_to(trust_file)
    for out in ("trust.json", "link", "fifo", "same"):
        result = CliRunner().invoke(main, ["trust", "allowed-signers", str(trust_file), "-o",
                                           str(tmp_path / out)])
        assert result.exit_code == OutputExistsError.exit_code, (out, result.output)
    assert trust_file.read_bytes() == before
    assert (tmp_path / "link").is_symlink() and not outside.exists()
    assert stat.S_ISFIFO((tmp_path / "fifo").lstat().st_mode)
    # a dangling link is not a free name for `trust create` either
    result = CliRunner().invoke(main, ["trust", "create", "--out", str(tmp_path / "link"),
                                       "--threshold", "1", "--key", str(tmp_path / "alice.pub")])
    assert result.exit_code == OutputExistsError.exit_code, result.output
    assert (tmp_path / "link").is_symlink() and not outside.exists()
    # an ordinary re-export still replaces its own earlier output
    for _ in range(2):
        result = CliRunner().invoke(main, ["trust", "allowed-signers", str(trust_file), "-o",
                                           str(tmp_path / "allowed_signers")])
        assert result.exit_code == 0, result.output
